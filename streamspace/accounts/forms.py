"""Portal forms of the identity pages."""

from __future__ import annotations

from allauth.account.forms import LoginForm as AllauthLoginForm
from django import forms

from streamspace.accounts.models import TokenScope


class OTPForm(forms.Form):
    code = forms.CharField(
        label="Authentication code",
        max_length=32,
        help_text="The 6-digit code from your authenticator app, or one of your recovery codes.",
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True, "spellcheck": "false"}
        ),
    )


class ConfirmTOTPForm(forms.Form):
    code = forms.CharField(
        label="Code from the app",
        max_length=8,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )


class ApiTokenForm(forms.Form):
    name = forms.CharField(label="Name", max_length=100, help_text="What the token is for, e.g. “laptop CLI”.")
    scope = forms.ChoiceField(label="Scope", choices=TokenScope.choices, initial=TokenScope.READ)
    expires_in_days = forms.TypedChoiceField(
        label="Expires",
        coerce=int,
        empty_value=None,
        required=False,
        choices=[("7", "In 7 days"), ("30", "In 30 days"), ("90", "In 90 days"), ("366", "In 1 year"), ("", "Never")],
        initial="30",
    )

    def __init__(self, *args, user=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if user is not None and user.role == "user":
            self.fields["scope"].choices = [c for c in TokenScope.choices if c[0] != TokenScope.ADMIN]


class LoginForm(AllauthLoginForm):
    """allauth's login form with a clearer label for the username-or-e-mail field."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["login"]
        field.label = "Username or e-mail"
        field.widget.attrs.update({"autocomplete": "username", "autofocus": True, "spellcheck": "false"})
        field.widget.attrs.pop("placeholder", None)
        self.fields["password"].widget.attrs.pop("placeholder", None)

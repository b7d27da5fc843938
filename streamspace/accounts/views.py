"""Portal pages of the identity area: the TOTP login step, two-factor set-up, API tokens."""

from __future__ import annotations

from base64 import b32encode
from urllib.parse import urlencode

from allauth.account.internal.decorators import login_stage_required
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django.views.generic import FormView

from streamspace.accounts import mfa
from streamspace.accounts.forms import ApiTokenForm, ConfirmTOTPForm, OTPForm
from streamspace.accounts.models import ApiToken
from streamspace.accounts.stages import TOTPStage
from streamspace.accounts.tokens import create_token, revoke_token
from streamspace.api.errors import ServiceError


@method_decorator(login_stage_required(stage=TOTPStage.key, redirect_urlname="account_login"), name="dispatch")
class TOTPLoginView(FormView):
    """Second step of the portal login: the password was right, now the code."""

    template_name = "account/login_totp.html"
    form_class = OTPForm

    def form_valid(self, form: OTPForm) -> HttpResponse:
        stage = self.request._login_stage  # type: ignore[attr-defined]
        user = stage.login.user
        method = mfa.verify(user, form.cleaned_data["code"])
        if method is None:
            # Counts towards the login lockout like a wrong password.
            user_login_failed.send(
                sender=__name__,
                credentials={"username": user.get_username()},
                request=self.request,
                reason="mfa_invalid",
            )
            form.add_error("code", "That code is not valid.")
            return self.form_invalid(form)
        self.request.streamspace_mfa_method = method  # type: ignore[attr-defined]
        return stage.exit()


def _render_codes(request: HttpRequest, codes: list[str], *, first_time: bool) -> HttpResponse:
    return render(
        request,
        "accounts/recovery_codes.html",
        {"codes": codes, "first_time": first_time, "security_tab": "mfa"},
    )


@login_required
def mfa_index(request: HttpRequest) -> HttpResponse:
    """Two-factor status: enrolled or not, recovery codes left, actions."""
    user = request.user
    context = {
        "security_tab": "mfa",
        "enabled": mfa.has_totp(user),
        "required": mfa.required_for(user),
        "recovery_left": mfa.recovery_codes_left(user),
        "remove_form": OTPForm(auto_id="remove_%s"),
    }
    return render(request, "accounts/security_mfa.html", context)


@login_required
def mfa_setup(request: HttpRequest) -> HttpResponse:
    """Show the QR code of a pending device and confirm it with a first code."""
    user = request.user
    if mfa.has_totp(user):
        return redirect("mfa_index")
    device = mfa.pending_device(user) or mfa.begin_totp(user)
    form = ConfirmTOTPForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            codes = mfa.confirm_totp(user, form.cleaned_data["code"], request=request)
        except ServiceError as exc:
            form.add_error("code", exc.detail)
        else:
            return _render_codes(request, codes, first_time=True)
    uri = mfa.provisioning_uri(device)
    context = {
        "security_tab": "mfa",
        "form": form,
        "qr_svg": mfa.qr_svg(uri),
        "secret": _base32_secret(device),
        "required": mfa.required_for(user),
    }
    return render(request, "accounts/security_mfa_setup.html", context)


def _base32_secret(device) -> str:
    secret = b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


@login_required
@require_POST
def mfa_recovery_codes(request: HttpRequest) -> HttpResponse:
    try:
        codes = mfa.regenerate_recovery_codes(request.user, request=request)
    except ServiceError as exc:
        messages.error(request, exc.detail)
        return redirect("mfa_index")
    return _render_codes(request, codes, first_time=False)


@login_required
@require_POST
def mfa_remove(request: HttpRequest) -> HttpResponse:
    """Removing the second factor needs a current code, so a hijacked session cannot."""
    form = OTPForm(request.POST, auto_id="remove_%s")
    if form.is_valid() and mfa.verify(request.user, form.cleaned_data["code"]):
        mfa.disable(request.user, request=request)
        messages.success(request, "Two-factor authentication is off.")
        return redirect("mfa_index")
    messages.error(request, "That code is not valid; two-factor authentication stays on.")
    return redirect("mfa_index")


@login_required
def api_tokens(request: HttpRequest) -> HttpResponse:
    """List tokens and create one; a new key is shown once, on the answer to the POST."""
    user = request.user
    form = ApiTokenForm(request.POST or None, user=user)
    new_key = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                _, new_key = create_token(
                    user,
                    name=form.cleaned_data["name"],
                    scope=form.cleaned_data["scope"],
                    expires_in_days=form.cleaned_data["expires_in_days"],
                    request=request,
                )
            except ServiceError as exc:
                form.add_error("name" if exc.code == "token_name_taken" else None, exc.detail)
        if new_key is None:
            status = 400
        else:
            form = ApiTokenForm(user=user)
    tokens = ApiToken.objects.filter(user=user, revoked_at__isnull=True)
    context = {"security_tab": "tokens", "form": form, "tokens": tokens, "new_key": new_key}
    return render(request, "accounts/security_tokens.html", context, status=status)


@login_required
@require_POST
def api_token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=token_id, user=request.user)
    revoke_token(token, actor=request.user, request=request)
    messages.success(request, f"Token “{token.name}” revoked.")
    return redirect("account_api_tokens")


def safe_next(request: HttpRequest, default: str) -> str:
    """``?next=`` when it stays on this site (a path, or a URL of this host), else ``default``.

    Django's ``url_has_allowed_host_and_scheme``, as allauth checks its own ``next``, with
    this request's host as the only allowed one: ``https://evil.example/``, ``//evil.example``,
    ``/\\evil.example`` and ``javascript:`` are all refused.
    """
    target = request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        return target
    return default


def admin_login_redirect(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
    """Replaces ``admin.site.login``: send to the portal login (TOTP step, lockout, SSO)."""
    admin_index = reverse("admin:index")
    if request.user.is_authenticated:
        if not request.user.is_staff:
            # Signed in without admin rights: answering with the login page would loop.
            raise PermissionDenied("The admin is for operators and admins.")
        return redirect(safe_next(request, admin_index))
    next_url = safe_next(request, admin_index)
    return redirect(f"{reverse('account_login')}?{urlencode({'next': next_url})}")

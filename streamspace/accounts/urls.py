"""Portal URLs of the identity area (mounted under ``/accounts/`` next to allauth's)."""

from django.urls import path

from streamspace.accounts import views

urlpatterns = [
    path("login/code/", views.TOTPLoginView.as_view(), name="account_login_totp"),
    path("security/two-factor/", views.mfa_index, name="mfa_index"),
    path("security/two-factor/setup/", views.mfa_setup, name="mfa_setup"),
    path("security/two-factor/recovery-codes/", views.mfa_recovery_codes, name="mfa_recovery_codes"),
    path("security/two-factor/remove/", views.mfa_remove, name="mfa_remove"),
    path("security/tokens/", views.api_tokens, name="account_api_tokens"),
    path("security/tokens/<int:token_id>/revoke/", views.api_token_revoke, name="account_api_token_revoke"),
]

from django.urls import path

from streamspace.accounts.api import mfa, tokens, users, views

urlpatterns = [
    path("auth/login", views.LoginView.as_view(), name="auth-login"),
    path("auth/refresh", views.RefreshView.as_view(), name="auth-refresh"),
    path("auth/logout", views.LogoutView.as_view(), name="auth-logout"),
    path("users/me", views.MeView.as_view(), name="users-me"),
    path("users", users.UserListView.as_view(), name="users-list"),
    path("users/<int:user_id>", users.UserDetailView.as_view(), name="users-detail"),
    path("tokens", tokens.ApiTokenListView.as_view(), name="tokens-list"),
    path("tokens/<int:token_id>", tokens.ApiTokenDetailView.as_view(), name="tokens-detail"),
    path("mfa", mfa.MfaStatusView.as_view(), name="mfa-status"),
    path("mfa/totp", mfa.TotpView.as_view(), name="mfa-totp"),
    path("mfa/totp/confirm", mfa.TotpConfirmView.as_view(), name="mfa-totp-confirm"),
    path("mfa/recovery-codes", mfa.RecoveryCodesView.as_view(), name="mfa-recovery-codes"),
]

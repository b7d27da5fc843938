from django.urls import path

from streamspace.accounts.api import views

urlpatterns = [
    path("auth/login", views.LoginView.as_view(), name="auth-login"),
    path("auth/refresh", views.RefreshView.as_view(), name="auth-refresh"),
    path("users/me", views.MeView.as_view(), name="users-me"),
]

"""Account services: role changes and the JSON password login (with second factor)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate, user_logged_in, user_login_failed
from rest_framework import status

from streamspace.accounts import mfa
from streamspace.accounts.models import Role, User
from streamspace.accounts.security import LOCKED_OUT_DETAIL
from streamspace.api.errors import ServiceError
from streamspace.audit.services import record


class LoginFailed(ServiceError):
    status_code = status.HTTP_401_UNAUTHORIZED
    code = "invalid_credentials"


class LockedOut(ServiceError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "locked_out"


def password_login(request: Any, username: str, password: str, otp: str | None) -> User:
    """Check a password (and the TOTP/recovery code when the user has one) for the API.

    ``request`` is the Django ``HttpRequest``: django-axes counts failures on it and flags a
    lockout. Wrong password and unknown user fail alike; a wrong code counts as a failure.
    """
    request.streamspace_login_method = "api"
    user = authenticate(request, username=username, password=password)
    if getattr(request, "axes_locked_out", False):
        raise LockedOut(LOCKED_OUT_DETAIL)
    if user is None:
        raise LoginFailed("Wrong username or password.")
    if mfa.has_totp(user):
        if not otp:
            raise LoginFailed(
                "Enter the code from your authenticator app (field otp).",
                code="mfa_required",
                extra={"mfa_required": True},
            )
        method = mfa.verify(user, otp)
        if method is None:
            user_login_failed.send(
                sender=__name__, credentials={"username": username}, request=request, reason="mfa_invalid"
            )
            if getattr(request, "axes_locked_out", False):
                raise LockedOut(LOCKED_OUT_DETAIL)
            raise LoginFailed("That code is not valid.", code="mfa_invalid", extra={"mfa_required": True})
        request.streamspace_mfa_method = method
    # Audit, the user.login event, last_login and axes' reset all hang off this signal.
    user_logged_in.send(sender=user.__class__, request=request, user=user)
    return user


def set_role(user: User, role: str, *, actor: User | None, request: Any = None, via: str = "api") -> bool:
    """Change ``user``'s role (audited); returns whether it changed."""
    if role not in Role.values:
        raise ValueError(f"unknown role {role!r}")
    if user.role == role:
        return False
    previous = user.role
    user.role = role
    user.save(update_fields=["role"])
    record(
        "user.role_changed",
        actor=actor,
        actor_repr="" if actor else f"sso:{via}",
        target=user,
        request=request,
        details={"from": previous, "to": role, "via": via},
    )
    return True

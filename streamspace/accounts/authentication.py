"""DRF authentication: JWT (``Bearer``) and personal API tokens (``Token``).

Both also apply two account rules before any view runs:

* a user the MFA policy covers who has not enrolled yet may only reach the enrolment API;
* an API token is limited by its scope: ``read`` allows safe methods only, ``write`` any
  method, and only ``admin`` lets the owner's operator/admin role count (else the request
  runs with plain user rights, see ``User.api_token_scope``).
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication, get_authorization_header
from rest_framework.permissions import SAFE_METHODS
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings as jwt_settings

from streamspace.accounts import user_cache
from streamspace.accounts.models import TokenScope
from streamspace.api.auth_header import parse_authorization

# DRF imports these classes while ``rest_framework.views`` loads, so this module imports
# nothing that imports DRF views (the service modules are imported inside the functions).

# What a user who still has to enrol in MFA may call.
ENROLMENT_PATHS = ("/api/v1/mfa", "/api/v1/auth/logout", "/api/v1/users/me")


def check_mfa_enrolment(request: Any, user: Any) -> None:
    """Refuse everything but the enrolment API to a user who must enrol first."""
    from streamspace.accounts import mfa  # noqa: PLC0415 imports DRF views (see the module note)
    from streamspace.api.errors import Forbidden  # noqa: PLC0415 imports DRF views (see the module note)

    if mfa.must_enrol(user) and not request.path.startswith(ENROLMENT_PATHS):
        raise Forbidden(
            "Set up two-factor authentication first (POST /api/v1/mfa/totp).", code="mfa_enrollment_required"
        )


class StreamSpaceJWTAuthentication(JWTAuthentication):
    """simplejwt's ``Bearer`` access tokens, plus the MFA enrolment gate.

    The header is read by ``streamspace.api.auth_header``, the parser the proxy and the
    agents' endpoints use, so a value one of them accepts is accepted by all. The token's
    user comes from ``accounts.user_cache``; the checks and refusals are simplejwt's.
    """

    def get_raw_token(self, header: bytes) -> bytes | None:
        scheme, token = parse_authorization(header)
        if scheme != "bearer":
            return None
        if not token:
            raise exceptions.AuthenticationFailed(
                "Invalid bearer header: expected 'Bearer <token>'.", code="bad_authorization_header"
            )
        return token.encode("ascii")

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        result = super().authenticate(request)
        if result is not None:
            check_mfa_enrolment(request, result[0])
        return result

    def get_user(self, validated_token: Any) -> Any:
        """``JWTAuthentication.get_user`` with the user read through the cache."""
        if jwt_settings.USER_ID_FIELD != "id" or jwt_settings.CHECK_REVOKE_TOKEN:
            return super().get_user(validated_token)  # another key, or the password hash to compare
        try:
            user_id = validated_token[jwt_settings.USER_ID_CLAIM]
        except KeyError as exc:
            raise InvalidToken(_("Token contained no recognizable user identification")) from exc
        user = user_cache.get(user_id)
        if user is None:
            raise exceptions.AuthenticationFailed(_("User not found"), code="user_not_found")
        if jwt_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise exceptions.AuthenticationFailed(_("User is inactive"), code="user_inactive")
        return user


class ApiTokenAuthentication(BaseAuthentication):
    """``Authorization: Token <key>`` with a personal API token."""

    keyword = "Token"

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        from streamspace.accounts.tokens import authenticate_key  # noqa: PLC0415 imports DRF views (see the module note)

        scheme, key = parse_authorization(get_authorization_header(request))
        if scheme != self.keyword.lower():
            return None
        if not key:
            raise exceptions.AuthenticationFailed("Invalid token header: expected 'Token <key>'.")
        token = authenticate_key(key, request=request)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        if token.scope == TokenScope.READ and request.method not in SAFE_METHODS:
            raise exceptions.PermissionDenied("This token has the read scope: it cannot change anything.")
        user = token.user
        user.api_token_scope = token.scope
        check_mfa_enrolment(request, user)
        return user, token

    def authenticate_header(self, request: Any) -> str:
        return self.keyword


class StreamSpaceSessionAuthentication(SessionAuthentication):
    """The portal's session cookie (with CSRF on unsafe methods), plus the MFA enrolment gate."""

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        result = super().authenticate(request)
        if result is not None:
            check_mfa_enrolment(request, result[0])
        return result

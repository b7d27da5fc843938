from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.views import TokenRefreshView

from streamspace.accounts.credentials import revoke as revoke_viewer_credentials
from streamspace.accounts.services import password_login
from streamspace.api.errors import ServiceError
from streamspace.api.strict import StrictFieldsMixin
from streamspace.audit.services import record


class LoginSerializer(StrictFieldsMixin, serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=256, trim_whitespace=False)
    otp = serializers.CharField(max_length=32, required=False, allow_blank=True)


class UserSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.CharField()
    role = serializers.CharField()
    groups = serializers.SerializerMethodField()

    def get_groups(self, user: Any) -> list[str]:
        return sorted(group.name for group in user.groups.all())


class LoginResponseSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()
    user = UserSerializer()


class LoginView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(request=LoginSerializer, responses={200: LoginResponseSerializer})
    def post(self, request: Request) -> Response:
        """Exchange a username and password (and ``otp`` when two-factor is on) for JWTs.

        401 ``invalid_credentials`` for a wrong password or unknown user alike; 401
        ``mfa_required`` (with ``"mfa_required": true``) when a code is needed and missing,
        ``mfa_invalid`` when it is wrong; 429 ``locked_out`` after too many failures.
        """
        body = LoginSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        user = password_login(request._request, data["username"], data["password"], data.get("otp") or None)
        refresh = RefreshToken.for_user(user)
        return Response(
            {"access": str(refresh.access_token), "refresh": str(refresh), "user": UserSerializer(user).data}
        )


class RefreshView(TokenRefreshView):
    """Exchange a refresh token for a new access token (and a new refresh token: rotation)."""


class LogoutSerializer(StrictFieldsMixin, serializers.Serializer):
    refresh = serializers.CharField(max_length=4096)


class LogoutView(APIView):
    @extend_schema(request=LogoutSerializer, responses={204: None})
    def post(self, request: Request) -> Response:
        """Revoke a refresh token (blacklist) and every viewer credential of the caller.

        The short-lived access token simply expires.
        """
        body = LogoutSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            token = RefreshToken(body.validated_data["refresh"])
        except TokenError as exc:
            raise ServiceError("The refresh token is invalid or already revoked.", code="invalid_token") from exc
        if str(token.get("user_id")) != str(request.user.pk):
            raise ServiceError("That refresh token belongs to someone else.", code="invalid_token")
        token.blacklist()
        revoke_viewer_credentials(request.user)  # viewer tokens and cookies end with the sign-out
        record("user.logout", actor=request.user, target=request.user, request=request, details={"api": True})
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(APIView):
    @extend_schema(responses=UserSerializer)
    def get(self, request: Request) -> Response:
        """The signed-in user."""
        return Response(UserSerializer(request.user).data)

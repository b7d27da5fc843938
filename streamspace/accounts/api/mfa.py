"""Two-factor set-up over the API: ``/api/v1/mfa``, ``/api/v1/mfa/totp``, ``.../confirm``,
``/api/v1/mfa/recovery-codes``."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from streamspace.accounts import mfa
from streamspace.accounts.models import ApiToken
from streamspace.api.errors import Forbidden, ServiceError
from streamspace.api.strict import StrictFieldsMixin


class EmptySerializer(StrictFieldsMixin, serializers.Serializer):
    """No fields: the body must be empty or ``{}`` (garbage is a 400, not ignored)."""


def _no_body(request: Request) -> None:
    data = request.data
    # An absent body parses to an empty QueryDict; anything else must be a JSON object.
    EmptySerializer(data={} if hasattr(data, "getlist") and not data else data).is_valid(raise_exception=True)


class CodeSerializer(StrictFieldsMixin, serializers.Serializer):
    otp = serializers.CharField(max_length=32)


class MfaStatusSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()
    required = serializers.BooleanField()
    recovery_codes_left = serializers.IntegerField()


class TotpEnrolmentSerializer(serializers.Serializer):
    otpauth_uri = serializers.CharField()
    qr_svg = serializers.CharField()


class RecoveryCodesSerializer(serializers.Serializer):
    recovery_codes = serializers.ListField(child=serializers.CharField())


def _status(user) -> dict:
    return {
        "enabled": mfa.has_totp(user),
        "required": mfa.required_for(user),
        "recovery_codes_left": mfa.recovery_codes_left(user),
    }


def _refuse_token_auth(request: Request) -> None:
    if isinstance(request.auth, ApiToken):
        raise Forbidden("Two-factor settings cannot be changed with an API token.", code="token_not_allowed")


class MfaStatusView(APIView):
    @extend_schema(responses=MfaStatusSerializer)
    def get(self, request: Request) -> Response:
        """Whether two-factor is on, required by policy, and how many recovery codes are left."""
        return Response(_status(request.user))


class TotpView(APIView):
    @extend_schema(request=None, responses={201: TotpEnrolmentSerializer})
    def post(self, request: Request) -> Response:
        """Start enrolment: a new secret as an ``otpauth://`` URI and an SVG QR code."""
        _refuse_token_auth(request)
        _no_body(request)
        device = mfa.begin_totp(request.user)
        uri = mfa.provisioning_uri(device)
        return Response({"otpauth_uri": uri, "qr_svg": mfa.qr_svg(uri)}, status=status.HTTP_201_CREATED)

    @extend_schema(request=CodeSerializer, responses={204: None})
    def delete(self, request: Request) -> Response:
        """Turn two-factor off; needs a current code (or a recovery code) in ``otp``."""
        _refuse_token_auth(request)
        body = CodeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if not mfa.has_totp(request.user):
            raise ServiceError("Two-factor authentication is not on.", code="mfa_not_enabled")
        if mfa.verify(request.user, body.validated_data["otp"]) is None:
            raise ServiceError("That code is not valid.", code="mfa_invalid")
        mfa.disable(request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TotpConfirmView(APIView):
    @extend_schema(request=CodeSerializer, responses=RecoveryCodesSerializer)
    def post(self, request: Request) -> Response:
        """Confirm enrolment with a current code; answers the recovery codes (shown once)."""
        _refuse_token_auth(request)
        body = CodeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        codes = mfa.confirm_totp(request.user, body.validated_data["otp"], request=request)
        return Response({"recovery_codes": codes})


class RecoveryCodesView(APIView):
    @extend_schema(request=None, responses=RecoveryCodesSerializer)
    def post(self, request: Request) -> Response:
        """Replace the recovery codes (the old ones stop working)."""
        _refuse_token_auth(request)
        _no_body(request)
        return Response({"recovery_codes": mfa.regenerate_recovery_codes(request.user, request=request)})

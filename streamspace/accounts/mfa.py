"""Second factor: TOTP devices and single-use recovery codes (django-otp), and the policy.

``STREAMSPACE_MFA_REQUIRED`` is ``none``, ``staff`` (admins and operators) or ``all``. A user
the policy covers who has no confirmed TOTP device must enrol before anything else
(:func:`must_enrol`, enforced by ``accounts.middleware`` and the API authentication).
"""

from __future__ import annotations

import io
from typing import Any

import qrcode
import qrcode.image.svg
from django.conf import settings
from django.db import transaction
from django_otp import match_token
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from streamspace.accounts.models import Role, User
from streamspace.api.errors import Conflict, ServiceError
from streamspace.audit.services import record

RECOVERY_CODE_COUNT = 10
TOTP_DEVICE_NAME = "Authenticator app"
RECOVERY_DEVICE_NAME = "Recovery codes"


def policy() -> str:
    return getattr(settings, "STREAMSPACE_MFA_REQUIRED", "none")


def required_for(user: User) -> bool:
    """Whether the MFA policy covers ``user`` (by role, not by a token's scope).

    Accounts that can only sign in through an identity provider (no usable password) are
    not covered: their second factor is the IdP's business, and they never see our code step.
    """
    mode = policy()
    if mode != "none" and not user.has_usable_password():
        return False
    if mode == "all":
        return True
    return mode == "staff" and user.role in (Role.ADMIN, Role.OPERATOR)


def has_totp(user: User) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def must_enrol(user: Any) -> bool:
    """A signed-in user the policy covers who has no second factor yet."""
    if not getattr(user, "is_authenticated", False):
        return False
    return required_for(user) and not has_totp(user)


def normalise_code(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def verify(user: User, code: str) -> str | None:
    """Check a TOTP code or a recovery code; returns ``"totp"``/``"recovery"`` or None.

    TOTP accepts one 30 s step either side and never the same step twice; a recovery
    code is deleted when used. Repeated failures are throttled by django-otp.
    """
    code = normalise_code(code or "")
    if not code or len(code) > 32:
        return None
    device = match_token(user, code)
    if device is None:
        return None
    return "recovery" if isinstance(device, StaticDevice) else "totp"


def begin_totp(user: User) -> TOTPDevice:
    """Start enrolment: a fresh unconfirmed device (replacing any earlier unconfirmed one)."""
    if has_totp(user):
        raise Conflict("An authenticator app is already set up; remove it first.", code="mfa_already_enabled")
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user, confirmed=False).delete()
        return TOTPDevice.objects.create(user=user, name=TOTP_DEVICE_NAME, confirmed=False)


def pending_device(user: User) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-id").first()


def provisioning_uri(device: TOTPDevice) -> str:
    """``otpauth://`` URI with the site as issuer, for authenticator apps."""
    uri: str = device.config_url
    return uri


def qr_svg(data: str) -> str:
    """An inline SVG QR code (no external assets, no JavaScript)."""
    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue().decode()


def confirm_totp(user: User, code: str, *, request: Any = None) -> list[str]:
    """Confirm the pending device with a current code; returns fresh recovery codes."""
    device = pending_device(user)
    if device is None:
        raise ServiceError("Start the authenticator set-up first.", code="mfa_not_started")
    if not device.verify_token(normalise_code(code or "")):
        raise ServiceError("That code is not valid; check the time on your device.", code="mfa_invalid")
    with transaction.atomic():
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        codes = _new_recovery_codes(user)
        record("mfa.enabled", actor=user, target=user, request=request, details={"method": "totp"})
    return codes


def regenerate_recovery_codes(user: User, *, request: Any = None) -> list[str]:
    """Replace every recovery code of ``user`` (the old ones stop working)."""
    if not has_totp(user):
        raise ServiceError("Set up an authenticator app first.", code="mfa_not_enabled")
    with transaction.atomic():
        codes = _new_recovery_codes(user)
        record("mfa.recovery_codes_regenerated", actor=user, target=user, request=request)
    return codes


def recovery_codes_left(user: User) -> int:
    return StaticToken.objects.filter(device__user=user).count()


def _new_recovery_codes(user: User) -> list[str]:
    device, _ = StaticDevice.objects.get_or_create(user=user, name=RECOVERY_DEVICE_NAME, defaults={"confirmed": True})
    device.token_set.all().delete()
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODE_COUNT)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return codes


def disable(user: User, *, actor: User | None = None, request: Any = None) -> None:
    """Remove every second factor of ``user`` (by themselves or an admin)."""
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user).delete()
        StaticDevice.objects.filter(user=user).delete()
        record("mfa.disabled", actor=actor or user, target=user, request=request)

"""Personal API tokens: create (key shown once), authenticate, revoke.

A key looks like ``ssp_<prefix>_<secret>``: the prefix (8 url-safe characters) finds the row
and is safe to display; only ``sha256(key)`` is stored. ``last_used_at`` is written at most
once a minute per token so authenticated traffic does not turn into a write per request.
Tokens are read through ``accounts.user_cache``, which every change here keeps current.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from streamspace.accounts import user_cache
from streamspace.accounts.models import ApiToken, TokenScope, User
from streamspace.api.client_ip import request_ip
from streamspace.api.errors import Conflict, ServiceError
from streamspace.audit.services import record

KEY_PREFIX = "ssp_"
LAST_USED_WRITE_INTERVAL = timedelta(seconds=60)
MAX_LIFETIME = timedelta(days=366)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_token(
    user: User,
    *,
    name: str,
    scope: str = TokenScope.READ,
    expires_in_days: int | None = None,
    request: Any = None,
) -> tuple[ApiToken, str]:
    """Create a token for ``user``; returns the row and the clear key (shown once only).

    ``admin`` scope is refused to users without the operator or admin role (it would add
    nothing and hides a misunderstanding). Expiry is capped at one year.
    """
    if scope not in TokenScope.values:
        raise ServiceError(f"scope must be one of {', '.join(TokenScope.values)}", code="invalid")
    if scope == TokenScope.ADMIN and user.role == "user":
        raise ServiceError("Only operators and admins can create admin-scoped tokens.", code="invalid_scope")
    expires_at: datetime | None = None
    if expires_in_days is not None:
        lifetime = timedelta(days=expires_in_days)
        if lifetime <= timedelta(0) or lifetime > MAX_LIFETIME:
            raise ServiceError("expires_in_days must be between 1 and 366", code="invalid")
        expires_at = timezone.now() + lifetime
    prefix = secrets.token_hex(4)  # no "_" inside: the key splits on it
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        if ApiToken.objects.filter(user=user, name=name, revoked_at__isnull=True).exists():
            raise Conflict(f"You already have a token named {name!r}.", code="token_name_taken")
        token = ApiToken.objects.create(
            user=user, name=name, prefix=prefix, key_hash=_digest(key), scope=scope, expires_at=expires_at
        )
        record(
            "token.created",
            actor=user,
            target=token,
            request=request,
            details={"name": name, "scope": scope, "expires_at": expires_at.isoformat() if expires_at else None},
        )
    return token, key


def revoke_token(token: ApiToken, *, actor: User, request: Any = None) -> None:
    """Revoke ``token`` now (idempotent); the row stays for the audit trail."""
    with transaction.atomic():
        updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if updated:
            user_cache.forget(token.user_id)  # refused by the next request, on every replica
            record("token.revoked", actor=actor, target=token, request=request, details={"name": token.name})


def authenticate_key(key: str, *, request: Any = None) -> ApiToken | None:
    """The live token for ``key`` (with ``user`` loaded), or None. Records last use."""
    if not key.startswith(KEY_PREFIX):
        return None
    prefix = key[len(KEY_PREFIX) :].split("_", 1)[0]
    token = user_cache.get_token(prefix)
    if token is None or not hmac.compare_digest(token.key_hash, _digest(key)):
        return None
    now = timezone.now()
    if token.revoked_at is not None or (token.expires_at is not None and token.expires_at <= now):
        return None
    if not token.user.is_active:
        return None
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_WRITE_INTERVAL:
        ip = request_ip(request)
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now, last_used_ip=ip)
        user_cache.forget_token(prefix)
        token.last_used_at, token.last_used_ip = now, ip
    return token

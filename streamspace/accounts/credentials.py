"""The revocation rule of viewer credentials (viewer tokens and the viewer cookie).

A viewer credential outlives neither a sign-out nor a password change. Each user has a
credentials epoch (``User.credentials_epoch``); every viewer credential carries the epoch it
was issued in, and whoever checks one (the session proxy, or a per-session origin's own
viewer check) accepts it only while :func:`is_current` says so. Signing out (portal or API)
and setting a new password move the epoch on (:func:`revoke`), which revokes every viewer
credential of that user at once, in every browser. Credentials that carry no epoch were
issued in epoch 0.
"""

from __future__ import annotations

from typing import Any

from streamspace.accounts.models import User

EPOCH_CLAIM = "e"  # the key under which a signed viewer credential carries its epoch


def epoch_of(user: User) -> int:
    """The epoch to put into a viewer credential issued to ``user`` now."""
    return user.credentials_epoch


def claimed_epoch(data: dict[str, Any]) -> int | None:
    """The epoch a decoded credential carries (0 when absent), or None if it is malformed."""
    value = data.get(EPOCH_CLAIM, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def is_current(claimed: int | None, current: int) -> bool:
    """Whether a credential of epoch ``claimed`` is still valid for a user now at ``current``."""
    return claimed is not None and claimed == current


def revoke(user: User) -> None:
    """Revoke every viewer credential ``user`` holds (sign-out, password change)."""
    user.revoke_credentials()

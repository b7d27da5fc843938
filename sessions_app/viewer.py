"""Short-lived viewer tokens bound to one session and one user (docs/architecture.md §10.1).

A token also carries the user's credentials epoch (``accounts.credentials``): it stops
working when its user signs out or changes the password, like the cookie it is exchanged for.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import signing

from streamspace.accounts.credentials import EPOCH_CLAIM

_SALT = "streamspace.viewer-token"


def make_viewer_token(session_id: Any, user_id: Any, *, epoch: int = 0) -> str:
    """A signed token for ``user_id`` on ``session_id``, issued in credentials epoch ``epoch``."""
    return signing.dumps({"s": str(session_id), "u": user_id, EPOCH_CLAIM: epoch}, salt=_SALT, compress=False)


def read_viewer_token(token: str, *, max_age: int | None = None) -> dict[str, Any] | None:
    """The token's ``{"s": session_id, "u": user_id, "e": epoch}`` or None if forged, malformed or expired."""
    try:
        data = signing.loads(
            token, salt=_SALT, max_age=max_age if max_age is not None else settings.STREAMSPACE_VIEWER_TOKEN_TTL_S
        )
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or "s" not in data or "u" not in data:
        return None
    return data


def viewer_url(session_id: Any, user_id: Any, *, epoch: int = 0) -> str:
    return f"/api/v1/http/{session_id}/?token={make_viewer_token(session_id, user_id, epoch=epoch)}"

"""Short-lived viewer tokens bound to one session and one user (docs/architecture.md §10.1).

A viewer URL points at the session's own origin (:mod:`sessions_app.proxy.origins`); the
session origin exchanges the token for a cookie of its own host. The token also carries the
origin of the portal that issued it (as the browser reached it, a host Django accepted), so
that the session origin lets only that page frame it and knows where to report to.
A token also carries the user's credentials epoch (``accounts.credentials``): it stops
working when its user signs out or changes the password, like the cookie it is exchanged for.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import signing

from sessions_app.proxy.origins import portal_origin, session_origin
from streamspace.accounts.credentials import EPOCH_CLAIM

_SALT = "streamspace.viewer-token"


def make_viewer_token(session_id: Any, user_id: Any, *, epoch: int = 0, portal: str = "") -> str:
    """A signed token for ``user_id`` on ``session_id``, issued in credentials epoch ``epoch`` by
    the portal at origin ``portal``."""
    payload: dict[str, Any] = {"s": str(session_id), "u": user_id, EPOCH_CLAIM: epoch}
    if portal:
        payload["o"] = portal
    return signing.dumps(payload, salt=_SALT, compress=False)


def read_viewer_token(token: str, *, max_age: int | None = None) -> dict[str, Any] | None:
    """The token's ``{"s": session_id, "u": user_id, "e": epoch[, "o": portal origin]}`` or None
    if forged, malformed or expired."""
    try:
        data = signing.loads(
            token, salt=_SALT, max_age=max_age if max_age is not None else settings.STREAMSPACE_VIEWER_TOKEN_TTL_S
        )
    except signing.BadSignature:
        return None
    return data if _well_formed(data) else None


def expired_token_portal(token: str) -> str:
    """The portal origin of a token whose signature is ours but whose lifetime is over ("" otherwise).

    Lets the session origin tell the portal page that framed it that the link expired.
    """
    try:
        data = signing.loads(token, salt=_SALT)
    except signing.BadSignature:
        return ""
    return data.get("o", "") if _well_formed(data) else ""


def _well_formed(data: Any) -> bool:
    return isinstance(data, dict) and "s" in data and "u" in data and isinstance(data.get("o", ""), str)


def viewer_url(session_id: Any, user_id: Any, *, scheme: str, host: str, epoch: int = 0) -> str:
    """An absolute URL that opens the session on its own origin, for a browser that reached the
    portal at ``scheme://host`` (``host`` as Django validated it: ``request.get_host()``)."""
    token = make_viewer_token(session_id, user_id, epoch=epoch, portal=portal_origin(scheme, host))
    return f"{session_origin(session_id, scheme=scheme, host=host)}/?token={token}"

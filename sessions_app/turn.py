"""Short-lived TURN credentials for a session's viewers (docs/architecture.md §24).

WebRTC needs a relay when the browser and the session cannot reach each other directly;
the WebSocket transport needs nothing (it travels through the session proxy). The TURN
server (coturn with ``use-auth-secret`` and ``static-auth-secret=<STREAMSPACE_TURN_SECRET>``)
and the control plane share one secret, and the control plane mints per-viewer credentials
by the TURN REST API scheme (draft-uberti-behave-turn-rest):

* ``username = "<expiry unix seconds>:<user id>"``
* ``credential = base64(HMAC-SHA1(secret, username))``

The TURN server recomputes the credential from the username and refuses it once the expiry
has passed, so nothing is stored and a credential cannot be stretched or forged without
the secret. The secret itself never leaves the control plane: sessions and browsers only
ever see credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from django.conf import settings

TURN_SCHEMES = ("turn:", "turns:")
ICE_SCHEMES = (*TURN_SCHEMES, "stun:", "stuns:")


def credential(secret: str, username: str) -> str:
    """The TURN REST API password for ``username``: base64(HMAC-SHA1(secret, username))."""
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def username_for(user_id: Any, *, expires_at: int) -> str:
    """``"<expiry>:<user id>"``: the TURN server reads the expiry from it."""
    return f"{int(expires_at)}:{user_id}"


def configured() -> bool:
    """Whether a TURN server is named: at least one ``turn:``/``turns:`` URL and the secret."""
    return bool(settings.STREAMSPACE_TURN_SECRET) and any(
        url.startswith(TURN_SCHEMES) for url in settings.STREAMSPACE_TURN_URLS
    )


def ice_servers(user_id: Any, *, now: float | None = None) -> dict[str, Any]:
    """The WebRTC configuration a viewer of ``user_id`` gets (the ``RTCConfiguration`` shape).

    ``iceServers``: STUN URLs without credentials, TURN URLs with a credential valid for
    ``STREAMSPACE_TURN_TTL_S``; empty when no TURN or STUN server is configured (the viewer
    then connects directly or uses the WebSocket transport). ``lifetimeDuration`` and
    ``expires_at`` say when the credential stops working.
    """
    ttl = settings.STREAMSPACE_TURN_TTL_S
    expires_at = int(time.time() if now is None else now) + ttl
    urls = settings.STREAMSPACE_TURN_URLS
    stun = [url for url in urls if not url.startswith(TURN_SCHEMES)]
    turn = [url for url in urls if url.startswith(TURN_SCHEMES)]
    servers: list[dict[str, Any]] = []
    if stun:
        servers.append({"urls": stun})
    if turn and settings.STREAMSPACE_TURN_SECRET:
        username = username_for(user_id, expires_at=expires_at)
        servers.append(
            {"urls": turn, "username": username, "credential": credential(settings.STREAMSPACE_TURN_SECRET, username)}
        )
    return {"iceServers": servers, "lifetimeDuration": f"{ttl}s", "expires_at": expires_at}

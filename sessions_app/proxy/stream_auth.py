"""The credentials the proxy presents to a session's streaming server (docs/architecture.md §17).

A session whose template takes stream secrets runs its streaming server (selkies) behind
HTTP basic auth: user ``streamspace``, the session's ``stream_secret`` for full control, its
``stream_view_secret`` for viewing only. The proxy adds ``Authorization`` to every request
and WebSocket handshake it sends upstream (the ASGI path and the front's WebSocket pipe), so
a viewer never sees a second login and a connection that bypasses the proxy gets a 401. The
browser's own ``Authorization`` never reaches the session (``rewrite.request_headers`` drops
it); this header is the only one sent.
"""

from __future__ import annotations

import base64
from typing import Any

from agent_runtime.protocol import STREAM_AUTH_USER


def basic_credentials(secret: str) -> str:
    """``Basic base64("streamspace:<secret>")``."""
    raw = f"{STREAM_AUTH_USER}:{secret}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def upstream_authorization(session: Any, *, view_only: bool) -> str | None:
    """The ``Authorization`` value to send upstream for ``session``, None for no header.

    ``session``: a :class:`~sessions_app.models.Session`, or anything with its
    ``stream_secret`` and ``stream_view_secret`` attributes. ``view_only``: the viewer may only
    watch (the view secret is presented). A session without secrets (its template takes none)
    gets no header; a view-only viewer of a session without a view secret gets none either,
    never the full secret.
    """
    secret = getattr(session, "stream_view_secret" if view_only else "stream_secret", "") or ""
    return basic_credentials(secret) if secret else None

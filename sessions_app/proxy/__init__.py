"""The session proxy, for HTTP and WebSocket (docs/architecture.md §10): each session on its own
origin, ``<session-id>.<STREAMSPACE_SESSION_DOMAIN>`` (browsers), and under
``/api/v1/http/<session-id>/`` on the portal's origin (API clients).

This package is the proxy's ASGI path, the one every request can take under any ASGI
server: raw ASGI apps routed by ``streamspace.routing.build_application`` ahead of Django.

* ``http_app`` — :mod:`.http` (streaming reverse proxy, waking page, status JSON);
* ``websocket_app`` — :mod:`.websocket`, behind an ``Origin`` check for browsers.

Modules: ``origins`` (session hosts and origins), ``paths`` (parsing, hostile-path checks),
``auth`` (viewer tokens, cookies, authorization cache), ``rewrite`` (headers, Location,
cookies), ``upstream`` (direct or tunnel), ``client`` (HTTP/1.1 keep-alive pool, llhttp),
``activity`` (idle tracking, wake), ``pages`` (waking and error pages). Back-pressure against
daphne's transports is ``streamspace.transport.flow``; sessions an agent can reach but the
control plane cannot are reached through agent tunnels (``agents_app/tunnels.py``).

Under ``python -m streamspace.serve`` the proxy's front (``streamspace.front``, a higher
layer this package never imports) sits ahead of daphne on every connection and serves the
common requests without daphne's per-request machinery (agents' tunnel sockets it gives to
``agents_app.agent_socket``). What it relies on here:

* the apps answer daphne's scope whoever built it, and whichever ``send`` they get:
  daphne's, or the front's ``Exchange.send`` (``streamspace.transport.flow`` finds the
  client's transport behind either for back-pressure and aborts);
* the front's WebSocket pipe makes the decisions ``websocket_app`` makes, with the same
  functions: ``origin_allowed``, ``auth.cached_decision`` / ``auth.authorize``,
  ``paths.parse``, ``rewrite.request_headers`` / ``response_headers``,
  ``upstream.routes_for`` / ``connect`` / ``direct_failed``, ``activity.keep_alive``; so
  a piped handshake is authorized and rewritten exactly like one that comes through
  daphne, and every handshake it does not pipe reaches ``websocket_app`` through daphne;
* ``paths.PREFIX_BYTES`` marks the requests the front may serve (``paths.parse`` reads the
  ``Host`` too: on a session's own origin the whole path is the session's); every other
  request, and any the front does not fully understand, reaches these apps through daphne.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from sessions_app.proxy.origins import session_id_for_host
from sessions_app.proxy.paths import PREFIX


def origin_allowed(scope: dict) -> bool:
    """Whether a proxy WebSocket's ``Origin`` may open it (cross-site WebSocket hijacking).

    On a session's origin only that origin's own pages may (never the portal's or another
    session's); on the portal's prefix, the portal's own hosts (``ALLOWED_HOSTS``) but never a
    session's origin. Non-browsers send no ``Origin``.
    """
    origin = None
    host = b""
    for name, value in scope.get("headers") or []:
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"host":
            host = value
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if not parts.netloc:
        return False
    same = parts.netloc.lower() == host.decode("latin-1").lower()
    if session_id_for_host(host) is not None:
        return same
    if session_id_for_host(parts.netloc.encode("latin-1")) is not None:
        return False
    if same:
        return True
    origin_host, _ = split_domain_port(parts.netloc)
    return bool(origin_host) and validate_host(origin_host, settings.ALLOWED_HOSTS)


# The front imports this package before Django's apps are loaded, and the ASGI modules load
# models: they are imported on the first request.


async def http_app(scope: dict, receive: Any, send: Any) -> None:
    from sessions_app.proxy.http import proxy_http  # noqa: PLC0415 see above

    await proxy_http(scope, receive, send)


async def websocket_app(scope: dict, receive: Any, send: Any) -> None:
    from sessions_app.proxy.websocket import proxy_websocket  # noqa: PLC0415 see above

    if not origin_allowed(scope):
        await receive()
        await send({"type": "websocket.close", "code": 1008})
        return
    await proxy_websocket(scope, receive, send)


__all__ = ["PREFIX", "http_app", "origin_allowed", "websocket_app"]

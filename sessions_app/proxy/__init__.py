"""The session proxy: ``/api/v1/http/<session-id>/`` for HTTP and WebSocket (docs/architecture.md §10).

This package is the proxy's ASGI path, the one every request can take under any ASGI
server: raw ASGI apps routed by ``streamspace.routing.build_application`` ahead of Django.

* ``http_app`` — :mod:`.http` (streaming reverse proxy, waking page, status JSON);
* ``websocket_app`` — :mod:`.websocket`, behind an ``Origin`` check for browsers.

Modules: ``paths`` (parsing, hostile-path checks), ``auth`` (viewer tokens, cookies,
authorization cache), ``rewrite`` (headers, Location, cookies), ``upstream`` (direct or
tunnel), ``client`` (HTTP/1.1 keep-alive pool, llhttp), ``activity`` (idle tracking,
wake), ``pages`` (waking and error pages). Back-pressure against daphne's transports is
``streamspace.transport.flow``; sessions an agent can reach but the control plane cannot
are reached through agent tunnels (``agents_app/tunnels.py``).

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
* ``paths.PREFIX_BYTES`` marks the requests the front may serve; every other request, and
  any the front does not fully understand, reaches these apps through daphne.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sessions_app.proxy.paths import PREFIX


def origin_allowed(scope: dict) -> bool:
    """Browsers must come from this site (cross-site WebSocket hijacking); non-browsers send no Origin."""
    from django.conf import settings
    from django.http.request import split_domain_port, validate_host

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
    if parts.netloc.lower() == host.decode("latin-1").lower():
        return True
    origin_host, _ = split_domain_port(parts.netloc)
    return bool(origin_host) and validate_host(origin_host, settings.ALLOWED_HOSTS)


async def http_app(scope: dict, receive: Any, send: Any) -> None:
    from sessions_app.proxy.http import proxy_http

    await proxy_http(scope, receive, send)


async def websocket_app(scope: dict, receive: Any, send: Any) -> None:
    from sessions_app.proxy.websocket import proxy_websocket

    if not origin_allowed(scope):
        await receive()
        await send({"type": "websocket.close", "code": 1008})
        return
    await proxy_websocket(scope, receive, send)


__all__ = ["PREFIX", "http_app", "origin_allowed", "websocket_app"]

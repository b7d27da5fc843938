"""The HTTP half of the session proxy, a raw ASGI app (no Django view, no middleware).

Browsers reach a session on its own origin (:mod:`.origins`); on the portal's prefix
``/api/v1/http/<id>/`` only API clients are served. A viewer link aimed at the prefix is sent
on to the session's origin (where the token is exchanged), and a browser navigation without
an ``Authorization`` header is sent to the portal's viewer page.

Request and response bodies stream in both directions; nothing holds a whole body. The
response is read from the session only as fast as the browser takes it (``OutboundFlow``)
and reading stops when the browser goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from channels.db import database_sync_to_async
from django.conf import settings
from django.urls import reverse

from sessions_app import turn
from sessions_app.models import SessionState
from sessions_app.proxy import activity, auth, client, pages, upstream
from sessions_app.proxy.origins import host_header, scope_session_id, session_origin
from sessions_app.proxy.pages import PREFIX_FRAMING, Framing
from sessions_app.proxy.paths import BadPath, ProxyPath, parse
from sessions_app.proxy.rewrite import header_value, request_headers, response_headers
from streamspace.api.client_ip import scope_ip
from streamspace.transport.flow import OutboundFlow, abort_connection

log = logging.getLogger(__name__)

SMALL_RESPONSE = 64 * 1024


class _ClientGone(Exception):
    pass


class _BodyTimeout(Exception):
    pass


_SESSION_HOST_FRAMING = Framing(on_session_host=True)


async def proxy_http(scope: dict, receive: Any, send: Any) -> None:
    """ASGI entry point for HTTP requests to a session's origin or under ``/api/v1/http/<id>/``."""
    try:
        path = parse(scope)
    except BadPath as exc:
        framing = _SESSION_HOST_FRAMING if scope_session_id(scope) is not None else PREFIX_FRAMING
        return await pages.error(scope, send, exc.status, exc.code, exc.detail, framing=framing)
    if path.token is not None and not path.on_session_host and scope["method"] in ("GET", "HEAD"):
        return await pages.redirect(send, _on_session_origin(scope, path))
    decision = auth.cached_decision(scope, path) or await auth.authorize(scope, path)
    framing = Framing(True, decision.portal_origin) if path.on_session_host else PREFIX_FRAMING
    if decision.status != 200:
        if decision.status == 401 and not path.on_session_host and _browser_navigation(scope):
            return await pages.redirect(send, reverse("portal:viewer", args=[path.session_id]))
        return await pages.error(scope, send, decision.status, decision.code, decision.detail, framing=framing)
    if decision.redirect and scope["method"] in ("GET", "HEAD"):
        return await pages.redirect(send, decision.redirect, decision.set_cookie, framing=framing)
    if path.needs_slash:
        location = path.cookie_path + (f"?{path.query.decode()}" if path.query else "")
        return await pages.redirect(send, location, framing=framing)
    target = decision.target
    assert target is not None
    if path.is_status:
        return await pages.status_json(
            send, state=target.state, ready=target.ready, message=target.status_message, framing=framing
        )
    if not target.ready:
        return await _not_ready(scope, send, path, target, framing)
    if target.drops_input and scope["method"] not in _SAFE_METHODS:  # a viewer's request may be input
        detail = "This session is shared with you to view only."
        return await pages.error(scope, send, 403, "view_only", detail, framing=framing)
    if path.is_turn and scope["method"] in ("GET", "HEAD") and turn.configured():
        body = json.dumps(turn.ice_servers(target.user_id)).encode()
        return await pages.respond(
            send, 200, body, b"application/json", framing.headers(), head=scope["method"] == "HEAD"
        )
    if activity.due(target.session_id):
        await activity.touch(target.session_id)
    extra = [*framing.headers()]
    if decision.set_cookie:
        extra.append((b"set-cookie", decision.set_cookie.encode()))
    await forward(scope, receive, send, path, target, extra, framing)


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _on_session_origin(scope: dict, path: ProxyPath) -> str:
    """The URL of a viewer link on the session's own origin (the token is exchanged there)."""
    host = host_header(scope.get("headers") or ()).decode("latin-1")
    # Behind a TLS terminator daphne may see plain HTTP; a deployment without DEBUG is HTTPS
    # (the portal's own cookies are Secure there).
    scheme = scope.get("scheme", "http") if settings.DEBUG else "https"
    origin = session_origin(path.session_id, scheme=scheme, host=host)
    query = path.query.decode("ascii")
    token = "token=" + quote(path.token or "", safe=":")  # signed tokens: URL-safe base64 and ":"
    return f"{origin}{path.upstream_path.decode('ascii')}?{query + '&' if query else ''}{token}"


def _browser_navigation(scope: dict) -> bool:
    """A browser loading a page (not a script or an API client): it is sent to the portal's viewer."""
    if scope["method"] not in ("GET", "HEAD"):
        return False
    mode = header_value(scope.get("headers") or [], b"sec-fetch-mode")
    return mode == b"navigate" if mode is not None else pages.wants_html(scope)


async def _not_ready(
    scope: dict, send: Any, path: ProxyPath, target: auth.SessionTarget, framing: Framing = PREFIX_FRAMING
) -> None:
    state, message = target.state, target.status_message
    if state in (SessionState.HIBERNATED, SessionState.HIBERNATING):
        state, message, refused = await database_sync_to_async(activity.wake)(target.session_id, target.user_id)
        if refused is not None and refused.status == 403:  # quota exceeded, or not the viewer's to wake
            return await pages.error(scope, send, 403, refused.code, refused.message, framing=framing)
    return await pages.waking(scope, send, prefix=path.prefix, state=state, message=message, framing=framing)


class _Body:
    """The request body as an async iterator; ``done`` once the client sent all of it."""

    def __init__(self, receive: Any, first: dict) -> None:
        self.done = not first.get("more_body", False)
        self._iterator = self._chunks(receive, first)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterator

    async def _chunks(self, receive: Any, first: dict) -> AsyncIterator[bytes]:
        async for chunk in _request_body(receive, first):
            yield chunk
        self.done = True


async def _request_body(receive: Any, first: dict) -> AsyncIterator[bytes]:
    message = first
    timeout = settings.STREAMSPACE_PROXY_BODY_TIMEOUT_S
    while True:
        if message["type"] == "http.disconnect":
            raise _ClientGone
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return
        try:
            message = await asyncio.wait_for(receive(), timeout)
        except TimeoutError:
            raise _BodyTimeout from None


async def _watch_disconnect(receive: Any, response: client.Response) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            response.close()
            return


async def forward(
    scope: dict,
    receive: Any,
    send: Any,
    path: ProxyPath,
    target: auth.SessionTarget,
    extra_headers: list[tuple[bytes, bytes]],
    framing: Framing = PREFIX_FRAMING,
) -> None:
    """Send the request to the session and stream the answer back."""
    try:
        routes = upstream.routes_for(target)
    except upstream.NoRoute as exc:
        return await pages.error(scope, send, 502, "no_route", str(exc), framing=framing)
    method = scope["method"]
    headers, _host = request_headers(
        scope["headers"],
        client_ip=scope_ip(scope),
        scheme=scope.get("scheme", "http"),
        prefix=path.prefix,
        authorization=target.upstream_authorization,
    )
    first = await receive()
    if first["type"] == "http.disconnect":
        return
    # A body that came in one message is sent as bytes (and can be replayed on a fresh
    # connection); a longer one streams. The client frames an empty one by the method.
    request_body = None
    body: client.Body
    if first.get("more_body", False):
        body = request_body = _Body(receive, first)
    else:
        body = first.get("body") or b""
    request_target = path.upstream_target_bytes()

    response = route = None
    for index, route in enumerate(routes):
        try:
            response = await upstream.request(route, method.encode("ascii"), request_target, headers, body)
            break
        except _ClientGone:
            return
        except _BodyTimeout:
            return await pages.error(
                scope, send, 408, "request_timeout", "The request body arrived too slowly.", framing=framing
            )
        except client.ConnectFailed as exc:
            if route.kind == "direct":
                upstream.direct_failed(target)
            if index + 1 < len(routes):  # nothing was sent: try the tunnel
                continue
            if exc.timeout:
                return await pages.error(
                    scope, send, 504, "upstream_timeout", "The session did not answer in time.", framing=framing
                )
            log.info("proxy to session %s via %s failed: %s", target.session_id, route.kind, exc)
            return await pages.error(
                scope, send, 502, "upstream_unreachable", "The session is not answering.", framing=framing
            )
        except client.UpstreamTimeout:
            return await pages.error(
                scope, send, 504, "upstream_timeout", "The session did not answer in time.", framing=framing
            )
        except client.UpstreamError as exc:
            log.info("proxy to session %s via %s failed: %s", target.session_id, route.kind, exc)
            return await pages.error(
                scope, send, 502, "upstream_unreachable", "The session is not answering.", framing=framing
            )
    assert response is not None and route is not None
    body_done = request_body is None or request_body.done
    await _stream_response(scope, receive if body_done else None, send, path, route, response, extra_headers, framing)


async def _stream_response(
    scope: dict,
    receive: Any | None,
    send: Any,
    path: ProxyPath,
    route: upstream.Route,
    response: client.Response,
    extra_headers: list[tuple[bytes, bytes]],
    framing: Framing = PREFIX_FRAMING,
) -> None:
    headers = response_headers(response.headers, prefix=path.prefix, upstream_hosts=route.location_hosts)
    if extra_headers:
        headers += extra_headers
    start = {"type": "http.response.start", "status": response.status, "headers": headers}
    length = response.content_length
    if length is not None and length <= SMALL_RESPONSE:
        # Fits the client's socket buffer: read it whole (the connection goes back to the
        # pool at once) and answer in one piece; no back-pressure or disconnect watch needed.
        try:
            body = await response.read_all()
        except client.UpstreamTimeout:
            response.release()
            return await pages.error(
                scope, send, 504, "upstream_timeout", "The session did not answer in time.", framing=framing
            )
        except client.UpstreamError as exc:
            response.release()
            log.info("response from session %s failed: %s", path.session_id, exc)
            return await pages.error(
                scope, send, 502, "upstream_unreachable", "The session is not answering.", framing=framing
            )
        response.release()
        await send(start)
        return await send({"type": "http.response.body", "body": body})

    flow = OutboundFlow.attach(send, websocket=False)
    # Once the request body is in, the only message left is the client's disconnect.
    watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, response)) if receive else None
    complete = False
    try:
        await send(start)
        while chunk := await response.read():
            await flow.wait()
            if flow.stopped:
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        else:
            complete = True
    except client.UpstreamError as exc:
        log.info("response from session %s cut short: %s", path.session_id, exc)
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
        flow.detach()
        response.release()
    # A truncated body must not look complete: drop the connection where the server lets us.
    if complete or not abort_connection(send):
        await send({"type": "http.response.body", "body": b"", "more_body": False})

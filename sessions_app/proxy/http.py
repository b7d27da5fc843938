"""The HTTP half of the session proxy, a raw ASGI app (no Django view, no middleware).

Request and response bodies stream in both directions; nothing holds a whole body. The
response is read from the session only as fast as the browser takes it (``OutboundFlow``)
and reading stops when the browser goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from sessions_app.models import SessionState
from sessions_app.proxy import activity, auth, client, pages, upstream
from sessions_app.proxy.paths import BadPath, ProxyPath, parse
from sessions_app.proxy.rewrite import request_headers, response_headers
from streamspace.api.client_ip import scope_ip
from streamspace.transport.flow import OutboundFlow, abort_connection

log = logging.getLogger(__name__)

SMALL_RESPONSE = 64 * 1024


class _ClientGone(Exception):
    pass


class _BodyTimeout(Exception):
    pass


async def proxy_http(scope: dict, receive: Any, send: Any) -> None:
    """ASGI entry point for ``/api/v1/http/<session-id>/...`` HTTP requests."""
    try:
        path = parse(scope)
    except BadPath as exc:
        return await pages.error(scope, send, exc.status, exc.code, exc.detail)
    decision = auth.cached_decision(scope, path) or await auth.authorize(scope, path)
    if decision.status != 200:
        return await pages.error(scope, send, decision.status, decision.code, decision.detail)
    if decision.redirect and scope["method"] in ("GET", "HEAD"):
        return await pages.redirect(send, decision.redirect, decision.set_cookie)
    if path.needs_slash:
        return await pages.redirect(send, path.cookie_path + (f"?{path.query.decode()}" if path.query else ""))
    target = decision.target
    assert target is not None
    if path.is_status:
        return await pages.status_json(send, state=target.state, ready=target.ready, message=target.status_message)
    if not target.ready:
        return await _not_ready(scope, send, path, target)
    if activity.due(target.session_id):
        await activity.touch(target.session_id)
    extra = [(b"set-cookie", decision.set_cookie.encode())] if decision.set_cookie else []
    await forward(scope, receive, send, path, target, extra)


async def _not_ready(scope: dict, send: Any, path: ProxyPath, target: auth.SessionTarget) -> None:
    state, message = target.state, target.status_message
    if state in (SessionState.HIBERNATED, SessionState.HIBERNATING):
        state, message, refused = await database_sync_to_async(activity.wake)(target.session_id, target.user_id)
        if refused is not None and refused.status == 403:  # quota exceeded, or not the viewer's to wake
            return await pages.error(scope, send, 403, refused.code, refused.message)
    return await pages.waking(scope, send, prefix=path.prefix, state=state, message=message)


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
) -> None:
    """Send the request to the session and stream the answer back."""
    try:
        routes = upstream.routes_for(target)
    except upstream.NoRoute as exc:
        return await pages.error(scope, send, 502, "no_route", str(exc))
    method = scope["method"]
    headers, _host = request_headers(
        scope["headers"], client_ip=scope_ip(scope), scheme=scope.get("scheme", "http"), prefix=path.prefix
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
            return await pages.error(scope, send, 408, "request_timeout", "The request body arrived too slowly.")
        except client.ConnectFailed as exc:
            if route.kind == "direct":
                upstream.direct_failed(target)
            if index + 1 < len(routes):  # nothing was sent: try the tunnel
                continue
            if exc.timeout:
                return await pages.error(scope, send, 504, "upstream_timeout", "The session did not answer in time.")
            log.info("proxy to session %s via %s failed: %s", target.session_id, route.kind, exc)
            return await pages.error(scope, send, 502, "upstream_unreachable", "The session is not answering.")
        except client.UpstreamTimeout:
            return await pages.error(scope, send, 504, "upstream_timeout", "The session did not answer in time.")
        except client.UpstreamError as exc:
            log.info("proxy to session %s via %s failed: %s", target.session_id, route.kind, exc)
            return await pages.error(scope, send, 502, "upstream_unreachable", "The session is not answering.")
    assert response is not None and route is not None
    body_done = request_body is None or request_body.done
    await _stream_response(scope, receive if body_done else None, send, path, route, response, extra_headers)


async def _stream_response(
    scope: dict,
    receive: Any | None,
    send: Any,
    path: ProxyPath,
    route: upstream.Route,
    response: client.Response,
    extra_headers: list[tuple[bytes, bytes]],
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
            return await pages.error(scope, send, 504, "upstream_timeout", "The session did not answer in time.")
        except client.UpstreamError as exc:
            response.release()
            log.info("response from session %s failed: %s", path.session_id, exc)
            return await pages.error(scope, send, 502, "upstream_unreachable", "The session is not answering.")
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

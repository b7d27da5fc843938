"""The WebSocket half of the session proxy (raw ASGI app; upstream side: ``websockets``).

Subprotocols are negotiated with the session and the chosen one is offered back to the
browser; text and binary frames pass unchanged; close codes travel both ways. Frames are
read from the session only as fast as the browser takes them (``OutboundFlow``), and the
browser's socket is paused when the session reads slowly (``InboundFlow`` +
``websockets``' own write buffer), so neither direction buffers without bound. An open
socket keeps the session's ``last_activity`` fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from agents_app.tunnels import TunnelUnavailable, open_tunnel
from sessions_app.models import SessionState
from sessions_app.proxy import activity, auth, upstream
from sessions_app.proxy.paths import BadPath, ProxyPath, parse
from sessions_app.proxy.rewrite import request_headers
from streamspace.api.client_ip import scope_ip
from streamspace.transport.flow import InboundFlow, OutboundFlow

log = logging.getLogger(__name__)

# Codes a peer may not send in a close frame (RFC 6455 §7.4.1): map them to something sendable.
_RESERVED = {1004, 1005, 1006, 1015}
TRY_AGAIN_LATER = 1013
BAD_GATEWAY = 1014


def for_browser(code: int) -> int:
    """A close code daphne can send: its WebSocket library (autobahn) sends only 1000 and
    3000-4999, so an RFC 6455 code 10xx travels as 40xx (1013 "try again later" as 4013).
    Under the launcher, piped WebSockets (:mod:`streamspace.front.pipe`) carry the session's own codes."""
    return code if code == 1000 or 3000 <= code <= 4999 else 4000 + code % 1000


def _sendable(code: int | None, default: int) -> int:
    if code is None or code in _RESERVED or not (1000 <= code <= 4999):
        return default
    return code


async def _deny(send: Any, code: int = 1008) -> None:
    # Before ``accept`` every ASGI server answers the handshake with 403.
    await send({"type": "websocket.close", "code": code})


async def _connect(route: upstream.Route, path: ProxyPath, headers: list, subprotocols: list[str]) -> ClientConnection:
    uri = f"ws://{route.authority}{path.upstream_target()}"
    options: dict[str, Any] = {
        "additional_headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
        "subprotocols": subprotocols or None,
        "compression": None,  # media is already compressed; loopback needs no deflate
        "max_size": settings.STREAMSPACE_PROXY_WS_MAX_MESSAGE,
        # send() waits for the socket to drain above this: at the default 32 KiB every 64 KiB
        # media frame would wait for a write-ready turn of the loop; still bounded
        "write_limit": 256 * 1024,
        "open_timeout": settings.STREAMSPACE_PROXY_CONNECT_TIMEOUT_S,
        "user_agent_header": None,
        "proxy": None,
    }
    if route.kind == "tunnel":
        assert route.agent_pk is not None
        sock = await open_tunnel(route.agent_pk, route.session_id, route.port)
        return await connect(uri, sock=sock, **options)
    return await connect(uri, **options)


async def proxy_websocket(scope: dict, receive: Any, send: Any) -> None:
    """ASGI entry point for WebSockets to a session's origin or under ``/api/v1/http/<session-id>/``."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    try:
        path = parse(scope)
    except BadPath:
        return await _deny(send)
    decision = await auth.authorize(scope, path)
    if decision.status != 200 or decision.target is None or path.is_status or path.needs_slash:
        return await _deny(send)
    target = decision.target
    if not target.ready:
        if target.state == SessionState.HIBERNATED:
            _, _, refused = await database_sync_to_async(activity.wake)(target.session_id, target.user_id)
            if refused is not None and refused.status == 403:  # not this viewer's to wake, or over quota
                return await _deny(send)
        await send({"type": "websocket.accept"})
        return await send({"type": "websocket.close", "code": for_browser(TRY_AGAIN_LATER)})

    headers, _ = request_headers(
        scope["headers"],
        client_ip=scope_ip(scope),
        scheme=scope.get("scheme", "ws"),
        prefix=path.prefix,
        websocket=True,
        authorization=target.upstream_authorization,
    )
    subprotocols = list(scope.get("subprotocols") or [])
    try:
        routes = upstream.routes_for(target)
    except upstream.NoRoute:
        return await _deny(send)
    session_ws = None
    for index, route in enumerate(routes):
        try:
            session_ws = await _connect(route, path, headers, subprotocols)
            break
        except (OSError, TimeoutError, InvalidHandshake, TunnelUnavailable) as exc:
            connect_error = isinstance(exc, OSError | TunnelUnavailable) and not isinstance(exc, TimeoutError)
            if route.kind == "direct" and connect_error:
                upstream.direct_failed(target)
            if connect_error and index + 1 < len(routes):
                continue
            log.info("websocket to session %s via %s failed: %r", target.session_id, route.kind, exc)
            return await _deny(send, BAD_GATEWAY)
    assert session_ws is not None
    await send({"type": "websocket.accept", "subprotocol": session_ws.subprotocol})
    await relay(scope, receive, send, session_ws, target)


async def relay(scope: dict, receive: Any, send: Any, session_ws: ClientConnection, target: auth.SessionTarget) -> None:
    """Pipe frames both ways until one side closes; the close code is passed on."""
    loop = asyncio.get_running_loop()
    outbound = OutboundFlow.attach(send, websocket=True)
    inbound = InboundFlow(send, receive)
    browser_closed = asyncio.Event()

    async def browser_to_session() -> None:
        while True:
            message = await receive()
            inbound.after_receive()
            if message["type"] == "websocket.disconnect":
                browser_closed.set()
                await session_ws.close(_sendable(message.get("code"), 1001))
                return
            text = message.get("text")
            await session_ws.send(text if text is not None else (message.get("bytes") or b""))

    async def session_to_browser() -> None:
        try:
            async for data in session_ws:
                await outbound.wait()
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
        except ConnectionClosed:
            pass
        if not browser_closed.is_set():
            received = session_ws.protocol.close_rcvd
            code = _sendable(received.code if received else None, BAD_GATEWAY if received is None else 1000)
            await send({"type": "websocket.close", "code": for_browser(code)})

    keep_alive = loop.create_task(activity.keep_alive(target.session_id))
    tasks = [loop.create_task(browser_to_session()), loop.create_task(session_to_browser())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = done.pop()
        if first is tasks[0] and not first.exception():
            # The browser left: give the session a moment to finish the closing handshake.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(tasks[1]), 2)
    finally:
        for task in [*tasks, keep_alive]:
            task.cancel()
        for task in [*tasks, keep_alive]:
            try:
                await task
            except (asyncio.CancelledError, ConnectionClosed):
                pass
            except Exception:
                log.exception("websocket relay for session %s failed", target.session_id)
        outbound.detach()
        inbound.release()
        await session_ws.close()

"""Agent tunnels: byte streams to a session port that the agent dials on our behalf.

Opening one (browser-side replica):
1. register a pending ``stream_id`` in this process with a socketpair;
2. ask the agent's leader, through the hub (``agents_app.dispatch.request_tunnel``), to
   connect ``POD_URL/api/v1/agents/tunnel/<stream_id>`` — this replica's own address;
3. the agent dials the session port and opens that WebSocket with its agent token;
   :func:`tunnel_endpoint` authenticates it, claims the pending entry and pipes bytes
   between the WebSocket (binary frames) and its end of the socketpair;
4. the proxy speaks plain HTTP/1.1 or WebSocket over the other end, like over TCP.

Tunnel bytes never ride the channel layer; only the ``tunnel_open`` nudge does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from agent_runtime.pipes import until_first_done
from agent_runtime.protocol import TUNNEL_PATH
from agents_app import dispatch
from agents_app.services import agent_for_token
from streamspace.api.auth_header import bearer_token
from streamspace.transport.flow import InboundFlow, OutboundFlow

log = logging.getLogger(__name__)

CHUNK = 256 * 1024


class TunnelUnavailable(Exception):
    """No tunnel could be opened (no leader, no POD_URL, the agent did not connect in time)."""


@dataclass
class _Pending:
    agent_pk: int
    sock: socket.socket  # the endpoint's end of the socketpair
    connected: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


_pending: dict[str, _Pending] = {}


def tunnel_url(stream_id: str) -> str:
    base = (settings.POD_URL or "").rstrip("/")
    if not base:
        raise TunnelUnavailable("POD_URL is not set, so agents cannot reach this replica for a tunnel.")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return f"{base}{TUNNEL_PATH}{stream_id}"


def _request_tunnel(agent_pk: int, stream_id: str, session_id: str, port: int, url: str, service: str) -> bool:
    return dispatch.request_tunnel(
        agent_pk, stream_id=stream_id, session_id=session_id, port=port, url=url, service=service
    )


async def open_tunnel(agent_pk: int, session_id: str, port: int, *, service: str = "") -> socket.socket:
    """A connected socket whose peer is the session's port, reached through the agent; with
    ``service="files"``, the agent's own file service for the session (§23)."""
    stream_id = secrets.token_urlsafe(24)
    url = tunnel_url(stream_id)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    pending = _Pending(agent_pk=agent_pk, sock=theirs)
    _pending[stream_id] = pending
    try:
        asked = await database_sync_to_async(_request_tunnel)(agent_pk, stream_id, session_id, port, url, service)
        if not asked:
            raise TunnelUnavailable("The session's agent has no connected leader.")
        try:
            await asyncio.wait_for(asyncio.shield(pending.connected), settings.STREAMSPACE_PROXY_TUNNEL_TIMEOUT_S)
        except TimeoutError:
            raise TunnelUnavailable("The agent did not open the tunnel in time.") from None
    except BaseException:
        ours.close()
        if not pending.connected.done():
            theirs.close()
        raise
    finally:
        _pending.pop(stream_id, None)
    return ours


def pending(stream_id: str) -> _Pending | None:
    """The tunnel waiting for an agent socket under ``stream_id`` in this process, if any."""
    entry = _pending.get(stream_id)
    return entry if entry is not None and not entry.connected.done() else None


def claim(stream_id: str, entry: _Pending) -> bool:
    """Take ``entry`` for one agent socket (the front's); False if it is gone or taken."""
    if _pending.get(stream_id) is not entry or entry.connected.done():
        return False
    del _pending[stream_id]
    return True


def agent_pk_for_token(token: str) -> int | None:
    agent = agent_for_token(token)
    return agent.pk if agent else None


async def _reject(send: Any, code: int) -> None:
    await send({"type": "websocket.close", "code": code})


async def tunnel_endpoint(scope: dict, receive: Any, send: Any) -> None:
    """ASGI app for ``/api/v1/agents/tunnel/<stream_id>`` (the agent's side of a tunnel)."""
    stream_id = scope.get("url_route", {}).get("kwargs", {}).get("stream_id", "")
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    pending = _pending.get(stream_id)
    authorization = next((v for k, v in scope.get("headers") or [] if k.lower() == b"authorization"), None)
    token = bearer_token(authorization)
    if pending is None or pending.connected.done():
        return await _reject(send, 4404)
    agent_pk = await database_sync_to_async(agent_pk_for_token)(token) if token else None
    if agent_pk != pending.agent_pk:
        log.warning("tunnel %s: refused a socket with the wrong agent token", stream_id)
        return await _reject(send, 4403)
    if pending.connected.done():  # claimed meanwhile by another socket
        return await _reject(send, 4409)
    await send({"type": "websocket.accept"})
    pending.connected.set_result(True)
    await pipe_websocket_to_socket(pending.sock, receive, send)


async def pipe_websocket_to_socket(sock: socket.socket, receive: Any, send: Any) -> None:
    """Relay binary frames <-> raw bytes until either side ends; both sides are closed after."""
    reader, writer = await asyncio.open_connection(sock=sock, limit=CHUNK)
    outbound = OutboundFlow.attach(send, websocket=True)
    inbound = InboundFlow(send, receive)

    async def socket_to_ws() -> None:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                return
            await outbound.wait()
            await send({"type": "websocket.send", "bytes": data})

    async def ws_to_socket() -> None:
        while True:
            message = await receive()
            inbound.after_receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data:
                writer.write(data)
                await writer.drain()

    try:
        await until_first_done(socket_to_ws(), ws_to_socket())
    finally:
        outbound.detach()
        inbound.release()
        writer.close()
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": 1000})

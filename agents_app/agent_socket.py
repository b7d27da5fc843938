"""The agent's side of a tunnel through the proxy's front: ``/api/v1/agents/tunnel/<id>``.

Without the front, daphne terminates the agent's WebSocket (autobahn), queues every
binary frame as an ASGI message, and :func:`agents_app.tunnels.tunnel_endpoint` writes it
to the tunnel's socketpair, and the other way round: every byte of a tunnelled session
crosses that machinery twice. Under the launcher the front gives the handshake of a
tunnel this process is waiting for to :class:`AgentSocket`: the agent's socket leaves
Twisted (``streamspace.transport.daphne_internals.detach``), frames are parsed and built
by ``websockets``' sans-I/O protocol, and payloads go between the frames and the
socketpair with back-pressure both ways (``agent_runtime.pipes``). Pings are answered, a
close from either side closes the other.

:class:`AgentSocket` is one of the front's handlers. This module sits below the front
(``streamspace.front``) and does not import it: it provides what
``streamspace.front.handlers.FrontHandler`` lists (``__init__(front, head)``,
``body_left``, ``start``, ``feed``, ``disconnected``) structurally, and
``tests/proxy/front/test_front_handlers.py`` checks that it does.

Only a well-formed handshake for a pending stream with its agent's token is taken; an
unknown or already claimed stream, a wrong token or an odd handshake goes to daphne with
the bytes received, and :func:`agents_app.tunnels.tunnel_endpoint` refuses it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from typing import Any

from channels.db import database_sync_to_async
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from agent_runtime.pipes import FramedEnd, PipeEnd, RawEnd
from agent_runtime.protocol import TUNNEL_PATH
from agents_app import tunnels as tunnel
from streamspace.api.auth_header import bearer_token
from streamspace.transport.access_log import log_websocket
from streamspace.transport.daphne_internals import detach, detachable

log = logging.getLogger(__name__)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
MAX_FRAME = 16 * 1024 * 1024  # the agent sends at most 256 KiB a frame (its socket reads)
_PAYLOAD = (Opcode.BINARY, Opcode.CONT)
_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nserver: daphne\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a handshake's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


class _NotOurs(Exception):
    pass


class _AgentEnd(FramedEnd):
    """The agent's socket: WebSocket frames in and out; payloads to and from the socketpair."""

    def __init__(self, owner: AgentSocket, greeting: bytes, early: bytes) -> None:
        super().__init__(owner, ServerProtocol(state=State.OPEN, max_size=MAX_FRAME))
        self.greeting = greeting  # the 101, written before anything else
        self.early = early  # bytes the front read before the socket left Twisted

    def connection_made(self, transport: Any) -> None:
        # Runs before the transport's first read: the 101 and the bytes read earlier come
        # first, whatever the kernel holds comes after.
        super().connection_made(transport)
        transport.write(self.greeting)
        early, self.early = self.early, b""
        if early:
            self.data_received(early)

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        for frame in ws.events_received():
            if frame.opcode is Opcode.TEXT:
                # A tunnel carries bytes: a text message is a broken agent (its continuation
                # frames must not pass for tunnel bytes either).
                ws.fail(1003, "tunnels carry binary frames only")
                break
            if frame.opcode in _PAYLOAD and frame.data:
                self.deliver(frame.data)
        self.flush()


class AgentSocket:
    """One agent WebSocket carrying one tunnel (the front's handler for its handshake).

    ``front`` is the front's connection (``streamspace.front.handlers.FrontConnection``),
    ``head`` the parsed handshake (``RequestHead``: its ``scope`` and ``raw`` bytes).
    """

    def __init__(self, front: Any, head: Any) -> None:
        self.front = front
        self.scope = head.scope
        self.raw_head = head.raw  # what daphne gets if the socket is not taken
        self.body_left = 0  # a handshake has no body
        self.task: asyncio.Task | None = None
        self.agent: _AgentEnd | None = None
        self.taken = False  # the socket left Twisted: daphne can no longer answer
        self.finished = False

    def start(self) -> None:
        """Check the handshake and take the socket (``run``)."""
        self.task = self.front.factory.loop.create_task(self.run())

    def feed(self, data: bytes) -> bytes:
        """A handshake has no body: every byte after its head is the WebSocket's (never called)."""
        return data

    def disconnected(self) -> None:
        """The agent left during the handshake; ``run`` hands nothing over after that."""

    async def run(self) -> None:
        try:
            await self._open()
        except _NotOurs as exc:
            log.debug("tunnel socket %s goes to daphne: %s", self.scope["path"], exc)
            if not self.taken and not self.front.lost:
                self.front.hand_over(prefix=self.raw_head)
        except Exception:
            log.exception("tunnel socket %s failed", self.scope["path"])
            if not self.taken and not self.front.lost:
                self.front.hand_over(prefix=self.raw_head)
            elif self.agent is not None:
                self.agent.transport.abort()

    async def _open(self) -> None:
        stream_id = self.scope["path"][len(TUNNEL_PATH) :]
        headers = dict(self.scope["headers"])
        key = headers.get(b"sec-websocket-key", b"")
        if headers.get(b"sec-websocket-version") != b"13" or len(base64.b64decode(key, validate=False)) != 16:
            raise _NotOurs("not a WebSocket handshake this endpoint takes")
        if not detachable(self.front.transport):
            raise _NotOurs("the socket cannot leave Twisted")
        pending = tunnel.pending(stream_id)
        if pending is None:
            raise _NotOurs("no such tunnel here")
        token = bearer_token(headers.get(b"authorization"))
        agent_pk = await database_sync_to_async(tunnel.agent_pk_for_token)(token) if token else None
        if agent_pk != pending.agent_pk or self.front.lost or not tunnel.claim(stream_id, pending):
            raise _NotOurs("wrong token, or claimed meanwhile")
        # The stream is ours from here: nothing goes to daphne any more.
        self.taken = True
        early = self.front.become(self)
        loop = asyncio.get_running_loop()
        greeting = _SWITCHING + b"sec-websocket-accept: " + accept_key(key) + b"\r\n\r\n"
        _, agent = await loop.connect_accepted_socket(
            lambda: _AgentEnd(self, greeting, early), sock=detach(self.front.transport)
        )
        self.agent = agent
        try:
            _, pair = await loop.connect_accepted_socket(lambda: RawEnd(self, agent), sock=pending.sock)
        except OSError:  # the proxy gave up waiting and closed its end
            agent.close(1001)
            raise
        agent.link(pair)  # if the agent is already gone, the proxy sees the tunnel end at once
        if not pending.connected.done():
            pending.connected.set_result(True)
        log_websocket(self.front.server, self.scope, "connected")

    def end_closed(self, end: PipeEnd) -> None:
        end.end_peer()
        if not self.finished:
            self.finished = True
            log_websocket(self.front.server, self.scope, "disconnected")

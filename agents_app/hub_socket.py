"""The agents' hub WebSocket served by the proxy's front: ``/api/v1/agents/connect``.

Through daphne, each hub connection costs the replica's one event loop Twisted's HTTP
request, autobahn's handshake and framing, and daphne's application bookkeeping, a
cost that decides how soon a reconnect herd's first agents are registered
(docs/architecture.md §7.1). Under the launcher the front gives an agent's hub handshake,
once admitted (:mod:`streamspace.transport.admission`), to :class:`HubSocket`, which runs
the same ASGI application (Channels' router, middleware and ``AgentConsumer``) with an
ASGI ``receive`` and ``send`` of its own:

* ``websocket.connect`` is the first message; the application's ``websocket.accept`` is
  answered with the ``101`` and the socket leaves Twisted
  (``streamspace.transport.daphne_internals.detach``) for an asyncio protocol whose frames
  ``websockets``' sans-I/O protocol parses and builds; a ``websocket.close`` before that is
  refused with daphne's ``403``;
* text and binary messages (fragmented ones reassembled) become ``websocket.receive``: the
  consumer closes one over ``protocol.MAX_FRAME_BYTES`` with 1009 once it is read, as
  through daphne; one over ``MAX_MESSAGE`` (four times that) fails the socket with 1009
  as soon as its length is known, so no agent can make the replica buffer more;
* the end of the connection, whoever ends it, is one ``websocket.disconnect`` with the
  close code (1006 without a close frame), and an application still running
  ``application_close_timeout`` seconds later is cancelled, as daphne does;
* pings are answered, and the socket is pinged after ``--ping-interval`` seconds without
  a frame from the agent and dropped if nothing arrives within ``--ping-timeout`` after
  that (daphne's keepalive, so a vanished host's socket ends);
* writes are not paced (neither are daphne's): what goes to an agent is its commands and
  replies, small frames it reads as they come.

A handshake the front cannot take (not a plain-TCP socket, a malformed key or version) goes
to daphne with its bytes unchanged, which answers it as it answers any. This module sits
below the front (``streamspace.front``) and provides what its ``FrontHandler`` lists,
structurally (``tests/proxy/front/test_front_handlers.py``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

from websockets.frames import Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from agent_runtime.protocol import MAX_FRAME_BYTES
from agents_app.agent_socket import accept_key
from streamspace.transport.access_log import log_websocket
from streamspace.transport.daphne_internals import detach, detachable, websocket_connect_timeout

log = logging.getLogger(__name__)

_REFUSED = (
    b"HTTP/1.1 403 Access denied\r\nserver: daphne\r\ncontent-type: text/plain\r\n"
    b"content-length: 13\r\nconnection: close\r\n\r\nAccess denied"
)
_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nserver: daphne\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
MAX_MESSAGE = 4 * MAX_FRAME_BYTES


class _AgentEnd(asyncio.Protocol):
    """The agent's socket once accepted: frames in through ``ws``, messages to the application."""

    def __init__(self, owner: HubSocket, greeting: bytes, early: bytes) -> None:
        self.owner = owner
        self.ws = ServerProtocol(state=State.OPEN, max_size=MAX_MESSAGE)
        self.greeting = greeting  # the 101, written before anything else
        self.early = early  # bytes the front read before the socket left Twisted
        self.transport: Any = None
        self.parts: list[bytes] = []  # a fragmented message's frames so far
        self.text = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.greeting)
        early, self.early = self.early, b""
        if early:
            self.data_received(early)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        owner.heard()
        ws = self.ws
        ws.receive_data(data)
        for frame in ws.events_received():
            if frame.opcode not in _DATA:
                continue  # pings are answered by ``ws``; a close is seen in ``connection_lost``
            if frame.opcode is not Opcode.CONT:
                self.parts, self.text = [], frame.opcode is Opcode.TEXT
            self.parts.append(frame.data)
            if frame.fin:
                data, self.parts = b"".join(self.parts), []
                try:
                    owner.deliver(data.decode() if self.text else data, self.text)
                except UnicodeDecodeError:
                    ws.fail(1007, "invalid UTF-8 in a text message")
                    break
        self.flush()

    def eof_received(self) -> bool:
        return False  # the connection closes

    def connection_lost(self, exc: Exception | None) -> None:
        ws = self.ws
        code = ws.close_rcvd.code if ws.close_rcvd is not None else 1006
        self.owner.ended(code)

    def send(self, text: str | None, data: bytes | None) -> None:
        if self.ws.state is State.OPEN:
            if text is not None:
                self.ws.send_text(text.encode())
            elif data is not None:
                self.ws.send_binary(data)
            self.flush()

    def close(self, code: int, reason: str = "") -> None:
        if self.ws.state is State.OPEN:
            self.ws.send_close(code, reason)
        self.flush()

    def ping(self) -> None:
        if self.ws.state is State.OPEN:
            self.ws.send_ping(b"")
            self.flush()

    def flush(self) -> None:
        """Write what the protocol has to say; close once it expects the connection to end."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
        if self.ws.close_expected():
            transport.close()


class HubSocket:
    """One agent hub WebSocket, its handshake through its end (the front's handler for it).

    ``front`` is the front's connection (``streamspace.front.handlers.FrontConnection``),
    ``head`` the parsed handshake (``RequestHead``: its ``scope`` and ``raw`` bytes).
    """

    def __init__(self, front: Any, head: Any) -> None:
        self.front = front
        self.scope = head.scope
        self.raw_head = head.raw  # what daphne gets if the front does not take the socket
        self.body_left = 0  # a handshake has no body
        # The connection's Twisted transport: what the admission knows the connection by.
        self.admission_key = front.transport
        self.task: asyncio.Task | None = None
        self.agent: _AgentEnd | None = None
        self.messages: asyncio.Queue[dict] = asyncio.Queue()
        self.accepted = False
        self.closed = False  # the application sent its close (or was refused)
        self.gone = False  # websocket.disconnect is queued
        self.last_heard = 0.0
        self.keepalive: asyncio.TimerHandle | None = None
        self.handshake_deadline: Any = None
        self.key = b""

    # -- the front's handler --
    def start(self) -> None:
        """Take the handshake and run the application, or give it to daphne."""
        headers = dict(self.scope["headers"])
        key = headers.get(b"sec-websocket-key", b"")
        try:
            valid = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            valid = False
        if not valid or headers.get(b"sec-websocket-version") != b"13" or not detachable(self.front.transport):
            self.front.hand_over(prefix=self.raw_head)
            return
        self.key = key
        self.messages.put_nowait({"type": "websocket.connect"})
        server = self.front.server
        self.task = task = self.front.factory.loop.create_task(
            server.application(scope=self.scope, receive=self.messages.get, send=self.send)
        )
        task.add_done_callback(self._application_done)
        deadline = websocket_connect_timeout(server)
        self.handshake_deadline = self.front.factory.loop.call_later(deadline, self._too_slow)

    def _too_slow(self) -> None:
        """daphne's handshake deadline: an application that has not accepted by now is refused."""
        if not self.accepted:
            log.warning("hub socket %s not accepted in time: refused", self.scope["path"])
            self._close(1011, "")

    def feed(self, data: bytes) -> bytes:
        """A handshake has no body: every byte after its head is the WebSocket's (never called)."""
        return data

    def disconnected(self) -> None:
        """The agent left before its handshake was answered."""
        self.ended(1006)

    # -- the application's ASGI send --
    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            await self._accept(message)
        elif kind == "websocket.send":
            if self.agent is not None:
                self.agent.send(message.get("text"), message.get("bytes"))
        elif kind == "websocket.close":
            self._close(message.get("code") or 1000, message.get("reason") or "")
        else:
            raise ValueError(f"a WebSocket application cannot send {kind!r}")

    async def _accept(self, message: dict) -> None:
        if self.accepted or self.closed or self.gone:
            return
        self.accepted = True
        self.handshake_deadline.cancel()
        front = self.front
        lines = [_SWITCHING, b"sec-websocket-accept: " + accept_key(self.key) + b"\r\n"]
        if message.get("subprotocol"):
            lines.append(b"sec-websocket-protocol: " + message["subprotocol"].encode() + b"\r\n")
        lines += [name + b": " + value + b"\r\n" for name, value in message.get("headers") or ()]
        lines.append(b"\r\n")
        early = front.become(self)
        sock = detach(front.transport)
        loop = asyncio.get_running_loop()
        try:
            _, self.agent = await loop.connect_accepted_socket(
                lambda: _AgentEnd(self, b"".join(lines), early), sock=sock
            )
        except OSError:  # the socket is unusable (the agent reset it meanwhile)
            sock.close()
            self.ended(1006)
            return
        log_websocket(front.server, self.scope, "connected")
        self.heard()

    def _close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self.agent is not None:
            self.agent.close(code, reason)
        elif not self.accepted and not self.front.lost:
            # Before accept: the handshake is refused, as daphne refuses it. The front's
            # ``connectionLost`` then calls ``disconnected``, which finds it ended.
            self.front.transport.write(_REFUSED)
            self.front.transport.loseConnection()
            self.ended(1006)

    # -- the agent's end --
    def deliver(self, data: str | bytes, text: bool) -> None:
        if not self.gone:
            key = "text" if text else "bytes"
            self.messages.put_nowait({"type": "websocket.receive", key: data})

    def heard(self) -> None:
        """A frame (or the handshake) arrived: the keepalive counts from now."""
        loop = self.front.factory.loop
        self.last_heard = loop.time()
        if self.keepalive is None and not self.gone:
            interval = float(getattr(self.front.server, "ping_interval", 20) or 0)
            if interval > 0:
                self.keepalive = loop.call_later(interval, self._keepalive, interval)

    def _keepalive(self, interval: float) -> None:
        """Ping an agent silent for ``interval``; drop it once silent for ``ping_timeout`` more."""
        self.keepalive = None
        agent = self.agent
        if self.gone or agent is None or agent.transport is None:
            return
        loop = self.front.factory.loop
        silent = loop.time() - self.last_heard
        timeout = float(getattr(self.front.server, "ping_timeout", 30) or 30)
        if silent >= interval + timeout:
            agent.transport.abort()
            return
        if silent >= interval:
            agent.ping()
        wait = interval - silent if silent < interval else min(interval, interval + timeout - silent)
        self.keepalive = loop.call_later(max(wait, 0.1), self._keepalive, interval)

    def ended(self, code: int) -> None:
        """The connection is over: the application hears it once, and must finish in time."""
        if self.gone:
            return
        self.gone = True
        for timer in (self.keepalive, self.handshake_deadline):
            if timer is not None:
                timer.cancel()
        self.keepalive = None
        self.messages.put_nowait({"type": "websocket.disconnect", "code": code})
        if self.accepted:
            log_websocket(self.front.server, self.scope, "disconnected")
        task = self.task
        if task is not None and not task.done():
            timeout = float(getattr(self.front.server, "application_close_timeout", 10) or 10)
            self.front.factory.loop.call_later(timeout, task.cancel)

    def _application_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("hub socket application failed", exc_info=task.exception())
        if self.gone:
            return
        if self.agent is not None:  # the application ended under an open socket: daphne closes it
            self.agent.close(1011 if task.cancelled() or task.exception() else 1000)
        elif not self.accepted:
            self._close(1011, "")

"""The front's Twisted protocol: a lean HTTP/1.1 reader ahead of daphne's own HTTP channel.

daphne parses each request with Twisted's line-by-line HTTP channel, builds a Twisted
``Request`` (header objects, a body file), then an ASGI scope, an ``asyncio.Queue`` and a
``partial`` per reply message, and writes the response through the ``Request`` again.
For the proxy's requests (the bulk of the traffic: every asset, every poll of a session's
UI) that machinery costs more CPU than the proxying itself.

:class:`FrontProtocol` is the protocol of every connection daphne accepts when the
control plane runs under ``python -m streamspace.serve``. It finds where a request head
ends (its first empty line, as Twisted finds it; at most ``MAX_HEAD`` bytes), has llhttp
parse it (:mod:`.head`), and gives each request it serves to the handler the head names
(:mod:`.handlers`): an HTTP request runs the same ASGI application through
:class:`.exchange.Exchange`, a WebSocket handshake goes to :class:`.pipe.WebSocketPipe`
or to the agents' tunnel socket.

Anything else, at any request boundary, is **handed to daphne**: daphne's HTTP protocol
is built for the connection, given every byte received so far, and keeps the connection
from then on. So every other path, every upgrade and every malformed, oversized or
unusual request meets daphne's own parser and daphne's answers; the front only ever
shortens the common path.

An agent's hub handshake (``/api/v1/agents/connect``, an upgrade with a token) waits for its
turn first when the factory has an admission (:mod:`streamspace.transport.admission`,
``STREAMSPACE_HUB_ADMISSION``): its complete head stays buffered, with no deadline running,
until it is let through or the client leaves. Then the factory's hub socket
(``agents_app.hub_socket``) serves it, or daphne when there is none or the head is one
:func:`parse` leaves to daphne.

A connection must send each request head within ``STREAMSPACE_PROXY_HEAD_TIMEOUT_S``
(counted from the connection's start for its first request, from a request's first byte
for the next ones; idle time between requests is the idle timeout's): one that does not
(a slow-header, "slowloris", client) is closed. The deadline also covers a first head
handed to daphne before it was complete, until daphne has all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Any

from django.apps import apps
from django.conf import settings
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol

from agent_runtime.protocol import CONNECT_PATH, TUNNEL_PATH
from sessions_app.files.paths import REQUEST_LINE_RE as _FILES_LINE
from sessions_app.proxy.origins import session_id_for_host
from sessions_app.proxy.paths import PREFIX_BYTES
from streamspace.front.handlers import FrontHandler
from streamspace.front.head import NotServed, parse
from streamspace.transport.admission import Admission, Ticket
from streamspace.transport.daphne_internals import DaphneHTTPFactory, reactor_loop, websocket_connect_timeout

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024  # Twisted's totalHeadersSize: a longer head goes to daphne, which refuses it
# The head deadline under a bare ASGI application (no Django settings); the StreamSpace
# application reads STREAMSPACE_PROXY_HEAD_TIMEOUT_S.
HEAD_TIMEOUT_S = 10
_REQUEST_PREFIX = b" " + PREFIX_BYTES
_TUNNEL_PREFIX = b" " + TUNNEL_PATH.encode()
_HUB_TARGET = re.compile(rb" " + re.escape(CONNECT_PATH.encode()) + rb"[ ?]")
# What an agent's hub handshake carries (a WebSocket upgrade with its token): other requests
# to the hub's path are daphne's at once and never wait for admission.
_UPGRADE_LINE = re.compile(rb"\n[Uu][Pp][Gg][Rr][Aa][Dd][Ee][ \t]*:[ \t]*[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]")
_AUTHORIZATION_LINE = re.compile(rb"\n[Aa][Uu][Tt][Hh][Oo][Rr][Ii][Zz][Aa][Tt][Ii][Oo][Nn][ \t]*:")
_HOST_LINE = re.compile(rb"\n[Hh][Oo][Ss][Tt][ \t]*:([^\r\n]*)\r?\n")
# Where Twisted's HTTP channel ends a head: an empty line, CRLF or bare LF line ends.
_HEAD_END = re.compile(rb"\n\r?\n")


class FrontFactory(DaphneHTTPFactory):
    """daphne's HTTP factory whose connections start with :class:`FrontProtocol`."""

    # What serves WebSocket handshakes under the prefix, and agents' tunnel sockets (None: daphne).
    websocket_pipe: Any = None
    tunnel_socket: Any = None
    hub_socket: Any = None
    head_timeout: float | None = None  # seconds a connection has for a request head (None: no limit)
    admission: Admission | None = None  # bounds the hub handshakes in flight (None: no bound)

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        # The loop under Twisted's asyncio reactor (daphne makes it the current loop only
        # after its listeners are set up, so ask the reactor).
        self.loop: asyncio.AbstractEventLoop = reactor_loop(self.reactor) or asyncio.get_event_loop()
        self.head_timeout = HEAD_TIMEOUT_S
        if apps.ready:  # the StreamSpace application (not, say, a bare ASGI app under the launcher)
            from agents_app.agent_socket import AgentSocket  # noqa: PLC0415 imports Django models
            from agents_app.hub_socket import HubSocket  # noqa: PLC0415 imports Django models
            from streamspace.front.pipe import WebSocketPipe  # noqa: PLC0415 imports Django models

            self.websocket_pipe = WebSocketPipe
            self.tunnel_socket = AgentSocket
            self.hub_socket = HubSocket
            self.head_timeout = settings.STREAMSPACE_PROXY_HEAD_TIMEOUT_S
            self.admit_hub(settings.STREAMSPACE_HUB_ADMISSION)

    def admit_hub(self, limit: int) -> None:
        """At most ``limit`` agent hub handshakes in flight (0: no bound), each slot held no
        longer than daphne's WebSocket handshake deadline (``streamspace.transport.admission``)."""
        self.admission = (
            Admission(limit, websocket_connect_timeout(self.server), self.reactor.callLater) if limit else None
        )

    def buildProtocol(self, addr: Any) -> FrontProtocol:
        return FrontProtocol(self, addr)

    def build_daphne_protocol(self, addr: Any) -> Any:
        return DaphneHTTPFactory.buildProtocol(self, addr)


class FrontProtocol(Protocol):
    """One client connection: proxy requests served here until one is daphne's.

    It is the :class:`~streamspace.front.handlers.FrontConnection` its handlers use.
    """

    def __init__(self, factory: FrontFactory, addr: Any) -> None:
        self.factory = factory
        self.server = factory.server
        self.addr = addr
        self.inner: Any = None  # daphne's protocol (or a handler that took the socket), once handed over
        self.buffer = b""
        self.handler: FrontHandler | None = None  # the request in flight (or a WebSocket handshake)
        self.lost = False
        self.aborted = False
        self.paused = False
        self.client: list | None = None
        self.server_addr: list | None = None
        self.scheme = "http"
        self.last_data = 0.0
        self._idle: Any = None
        self._head_deadline: Any = None
        self._head_tail: bytes | None = None  # handed over mid-head: the last bytes passed to daphne
        self.ticket: Ticket | None = None  # a hub handshake's place in the factory's admission

    # -- Twisted protocol --
    def connectionMade(self) -> None:
        transport = self.transport
        peer, host = transport.getPeer(), transport.getHost()
        if hasattr(peer, "host") and hasattr(peer, "port"):
            self.client = [str(peer.host), peer.port]
            self.server_addr = [str(host.host), host.port]
        if ISSLTransport.providedBy(transport):
            self.scheme = "https"
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            with contextlib.suppress(OSError):
                set_no_delay(True)
        self.last_data = time.monotonic()
        timeout = self.factory.timeOut
        if timeout:
            self._idle = self.factory.reactor.callLater(timeout, self._check_idle)
        self._start_head_deadline()

    def dataReceived(self, data: bytes) -> None:
        inner = self.inner
        if inner is not None:
            if self._head_tail is not None:
                self._watch_head(data)
            inner.dataReceived(data)
            return
        self.last_data = time.monotonic()
        handler = self.handler
        if handler is not None and handler.body_left:
            data = handler.feed(data)
            if not data:
                return
        self.buffer = self.buffer + data if self.buffer else data
        if self.ticket is not None:  # a hub handshake waiting for its turn: its bytes wait with it
            if len(self.buffer) > MAX_HEAD and not self.paused:
                self.paused = True
                self.transport.pauseProducing()
        elif handler is None:
            self._next()
        elif len(self.buffer) > MAX_HEAD and not self.paused:
            # A pipelined request waits for the response in flight; do not read without bound.
            self.paused = True
            self.transport.pauseProducing()

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True
        self._cancel_idle()
        self._stop_head_deadline()
        if self.ticket is not None:  # gone while waiting, or before its WebSocket was up
            self.ticket.release()
        if self.inner is not None:
            self.inner.connectionLost(reason)
            return
        handler = self.handler
        if handler is not None:
            handler.disconnected()

    # -- requests --
    @staticmethod
    def _maybe_session_host(buf: bytes, line_end: int) -> bool:
        """For a target outside the proxy's prefix: whether the request may be for a session's
        own origin. False as soon as a complete ``Host`` line names another host, so portal
        requests go to daphne without waiting for the rest of their head; :func:`parse`
        decides the rest once the head is complete."""
        found = _HOST_LINE.search(buf, line_end)
        return found is None or session_id_for_host(found.group(1).strip(b" \t")) is not None

    def _next(self) -> None:
        buf = self.buffer
        line_end = buf.find(b"\n")
        hub = False
        if line_end >= 0:
            line = buf[:line_end]
            factory = self.factory
            hub = (factory.admission is not None or factory.hub_socket is not None) and _HUB_TARGET.search(
                line
            ) is not None
            if (
                not hub
                and _REQUEST_PREFIX not in line
                and (_TUNNEL_PREFIX not in line or self.factory.tunnel_socket is None)
                and _FILES_LINE.search(line) is None
                and not self._maybe_session_host(buf, line_end)
            ):
                self.hand_over()
                return
            # Where Twisted would end the head; a head with bare LFs llhttp refuses (daphne's).
            found = _HEAD_END.search(buf, line_end)
        else:
            found = None
        if found is None or found.start() > MAX_HEAD:
            if len(buf) > MAX_HEAD:
                self.hand_over()
            else:
                self._start_head_deadline()
            return
        end = found.end()
        self._stop_head_deadline()
        if hub:
            if not (_UPGRADE_LINE.search(buf, line_end, end) and _AUTHORIZATION_LINE.search(buf, line_end, end)):
                self.hand_over()
            elif self.factory.admission is not None:
                self._wait_for_admission()
            else:
                self._serve_hub()
            return
        raw, rest = buf[:end], buf[end:]
        try:
            head = parse(raw, self)
        except NotServed:
            self.hand_over()
            return
        handler = head.handler(self, head)
        self.handler = handler
        if handler.body_left and rest:
            rest = handler.feed(rest)
        self.buffer = rest
        handler.start()

    def _wait_for_admission(self) -> None:
        """A complete hub handshake head: daphne gets it when the admission lets it through."""
        admission = self.factory.admission
        assert admission is not None
        self.ticket = admission.enter(self.transport, self._admitted)

    def _admitted(self, ticket: Ticket) -> None:
        self.ticket = ticket
        if not ticket.holding:  # released meanwhile (its hold deadline)
            return
        if self.lost:
            ticket.release()
            return
        # The ticket stays: a connection lost before its upgrade gives its slot back here.
        self._serve_hub()

    def _serve_hub(self) -> None:
        """A hub handshake's complete head, its turn come: the hub socket takes it, else daphne."""
        buf = self.buffer
        found = _HEAD_END.search(buf)
        if self.factory.hub_socket is None or found is None:
            self.hand_over()
            return
        end = found.end()
        try:
            head = parse(buf[:end], self)
        except NotServed:
            self.hand_over()
            return
        if head.handler is not self.factory.hub_socket:
            self.hand_over()
            return
        self.buffer = buf[end:]
        handler = head.handler(self, head)
        self.handler = handler
        handler.start()

    def request_done(self, handler: FrontHandler, *, keep_alive: bool) -> None:
        """``handler``'s response is complete: the next request, or the connection's end."""
        if self.handler is handler:
            self.handler = None
        self.last_data = time.monotonic()  # the idle timeout starts again (Twisted: requestDone)
        if self.lost or self.aborted:
            return
        if not keep_alive:
            self.transport.loseConnection()
            return
        if self.paused:
            self.paused = False
            self.transport.resumeProducing()
        if self.buffer:
            self._next()

    def abort(self) -> None:
        """Drop the connection now (a response cut short must not look complete)."""
        self.aborted = True
        if not self.lost:
            self.transport.abortConnection()

    def become(self, owner: Any) -> bytes:
        """``owner`` (a WebSocket handler) takes the connection; returns the bytes buffered meanwhile."""
        self.inner = owner
        return self._give_up_connection()

    def _give_up_connection(self) -> bytes:
        """The front stops serving this connection: no idle timer, reading on; the buffered bytes."""
        self._cancel_idle()
        self.handler = None
        if self.paused:
            self.paused = False
            self.transport.resumeProducing()
        data, self.buffer = self.buffer, b""
        return data

    def _cancel_idle(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()

    def hand_over(self, prefix: bytes = b"") -> None:
        """daphne's HTTP protocol takes the connection, with the bytes received so far.

        ``prefix``: bytes taken out of the buffer earlier (a WebSocket handshake given up on).
        """
        data = prefix + self._give_up_connection()
        if self._head_deadline is not None:
            # The head is not all in yet: the deadline runs on until daphne has all of it.
            self._head_tail = b""
            self._watch_head(data)
        inner = self.factory.build_daphne_protocol(self.addr)
        self.inner = inner
        inner.makeConnection(self.transport)
        if data:
            inner.dataReceived(data)

    # -- timers --
    def _start_head_deadline(self) -> None:
        timeout = self.factory.head_timeout
        if timeout and self._head_deadline is None and not self.lost:
            self._head_deadline = self.factory.reactor.callLater(timeout, self._head_too_slow)

    def _stop_head_deadline(self) -> None:
        deadline, self._head_deadline = self._head_deadline, None
        self._head_tail = None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _watch_head(self, data: bytes) -> None:
        """Stop the head deadline once the bytes passed to daphne complete the head."""
        seen = self._head_tail + data
        if _HEAD_END.search(seen) is not None:
            self._stop_head_deadline()
        else:
            self._head_tail = seen[-2:]

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        self._head_tail = None
        if self.lost:
            return
        log.info(
            "closing a connection from %s: no complete request head within %s s", self.client, self.factory.head_timeout
        )
        self.transport.loseConnection()

    def _check_idle(self) -> None:
        """Twisted's idle timeout for HTTP connections (daphne's factory sets it)."""
        self._idle = None
        if self.lost or self.inner is not None:
            return
        timeout = self.factory.timeOut
        left = self.last_data + timeout - time.monotonic()
        handler = self.handler
        if left <= 0 and (handler is None or handler.body_left):
            # Idle between requests, or a request body that stopped arriving (Twisted times both out).
            self.transport.loseConnection()
            return
        self._idle = self.factory.reactor.callLater(max(left, 1.0), self._check_idle)

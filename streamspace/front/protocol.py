"""A lean HTTP/1.1 front for the session proxy, in front of daphne's own HTTP channel.

daphne parses each request with Twisted's line-by-line HTTP channel, builds a Twisted
``Request`` (header objects, a body file), then an ASGI scope, an ``asyncio.Queue`` and a
``partial`` per reply message, and writes the response through the ``Request`` again.
For the proxy's requests (the bulk of the traffic: every asset, every poll of a session's
UI) that machinery cost more CPU than the proxying itself (bench/RESULTS.md, "Proxy").

:class:`FrontProtocol` is the protocol of every connection daphne accepts when the
control plane runs under ``python -m streamspace.serve``. It reads the request head
itself (one ``find``, one ``split``, one validating regex) and, when the request is one
it fully understands, runs the same ASGI application with a small ``receive``/``send``
pair (:class:`.exchange.Exchange`) and writes the response in one piece. It serves only:

* HTTP/1.1 requests under ``/api/v1/http/`` (the session proxy);
* with a ``Content-Length`` body or none (no ``Transfer-Encoding``, no ``Expect``);
* not upgrades (WebSockets go to daphne, which speaks the WebSocket protocol);
* heads under ``MAX_HEAD`` bytes and ``MAX_HEADERS`` lines, every line well formed
  (daphne's own rules: h11's header-name syntax, no control bytes RFC 9110 forbids).

Anything else, at any request boundary, is **handed to daphne**: daphne's HTTP protocol
is built for the connection, given every byte received so far, and keeps the connection
from then on. So every other path, every upgrade and every malformed, oversized or
unusual request meets daphne's own parser and its answers exactly as before; the front
only ever shortens the common path.

What the application sees is what daphne would give it (scope keys and values, the
``X-Forwarded-*`` handling of ``--proxy-headers``, headers with ``_`` dropped, the
``Daphne-Root-Path`` header), and what daphne adds to a response is added here too
(``Server``, chunked framing when a streamed response has no length). The access log
line is daphne's. Back-pressure and aborts: the exchange exposes its Twisted transport
(``front_transport``) to :mod:`streamspace.transport.flow`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Any
from urllib.parse import unquote

from daphne.http_protocol import HTTPFactory
from daphne.utils import HEADER_NAME_RE, parse_x_forwarded_for
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol

from agent_runtime.protocol import TUNNEL_PATH
from sessions_app.proxy.paths import PREFIX_BYTES
from streamspace.front.exchange import Exchange

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024  # Twisted's totalHeadersSize: a longer head goes to daphne, which refuses it
MAX_HEADERS = 100  # lines; more go to daphne (Twisted allows 500, then refuses)
# Bytes daphne (RFC 9110 §5.5, h11) refuses in a head, and a CR or LF that is not a CRLF.
_BAD_HEAD = re.compile(rb"[\x00\x0b\x0c\x1c-\x1e\x85]|\r(?!\n)|(?<!\r)\n")
_TARGET = re.compile(rb"[\x21-\x7e]+")  # ASCII, no spaces or controls (daphne refuses the rest)
_PUNT_HEADERS = frozenset({b"transfer-encoding", b"expect"})
_REQUEST_PREFIX = b" " + PREFIX_BYTES
_TUNNEL_BYTES = TUNNEL_PATH.encode()
_TUNNEL_PREFIX = b" " + _TUNNEL_BYTES


class _Punt(Exception):
    """This request is daphne's."""


class FrontFactory(HTTPFactory):
    """daphne's HTTP factory whose connections start with :class:`FrontProtocol`."""

    # What serves WebSocket handshakes under the prefix, and agents' tunnel sockets (None: daphne).
    websocket_pipe: Any = None
    tunnel_socket: Any = None

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        # The loop under Twisted's asyncio reactor (daphne makes it the current loop only
        # after its listeners are set up, so ask the reactor).
        self.loop: asyncio.AbstractEventLoop = (
            getattr(self.reactor, "_asyncioEventloop", None) or asyncio.get_event_loop()
        )
        from django.apps import apps

        if apps.ready:  # the StreamSpace application (not, say, a bare ASGI app under the launcher)
            from agents_app.agent_socket import AgentSocket
            from streamspace.front.pipe import WebSocketPipe

            self.websocket_pipe = WebSocketPipe
            self.tunnel_socket = AgentSocket

    def buildProtocol(self, addr: Any) -> FrontProtocol:
        return FrontProtocol(self, addr)

    def build_daphne_protocol(self, addr: Any) -> Any:
        return HTTPFactory.buildProtocol(self, addr)


class FrontProtocol(Protocol):
    """One client connection: proxy requests served here until one is daphne's."""

    def __init__(self, factory: FrontFactory, addr: Any) -> None:
        self.factory = factory
        self.server = factory.server
        self.addr = addr
        self.inner: Any = None  # daphne's protocol, once the connection is handed over
        self.buffer = b""
        self.exchange: Any = None  # the Exchange in flight, or the WebSocket pipe during its handshake
        self.lost = False
        self.paused = False
        self.client: list | None = None
        self.server_addr: list | None = None
        self.scheme = "http"
        self.last_data = 0.0
        self._idle: Any = None

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

    def dataReceived(self, data: bytes) -> None:
        inner = self.inner
        if inner is not None:
            inner.dataReceived(data)
            return
        self.last_data = time.monotonic()
        exchange = self.exchange
        if exchange is not None and exchange.body_left:
            data = exchange.feed(data)
            if not data:
                return
        self.buffer = self.buffer + data if self.buffer else data
        if exchange is None:
            self._next()
        elif len(self.buffer) > MAX_HEAD and not self.paused:
            # A pipelined request waits for the response in flight; do not read without bound.
            self.paused = True
            self.transport.pauseProducing()

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True
        self._cancel_idle()
        if self.inner is not None:
            self.inner.connectionLost(reason)
            return
        exchange = self.exchange
        if exchange is not None:
            exchange.disconnected()

    # -- requests --
    def _next(self) -> None:
        buf = self.buffer
        line_end = buf.find(b"\r\n")
        if line_end < 0:
            if len(buf) > MAX_HEAD:
                self.hand_over()
            return
        line = buf[:line_end]
        if _REQUEST_PREFIX not in line and (_TUNNEL_PREFIX not in line or self.factory.tunnel_socket is None):
            self.hand_over()
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self.hand_over()
            return
        if end > MAX_HEAD:
            self.hand_over()
            return
        try:
            exchange, scope = self._parse(buf[:end])
        except _Punt:
            self.hand_over()
            return
        rest = buf[end + 4 :]
        if not isinstance(exchange, Exchange):  # a WebSocket handshake and its handler class
            pipe = exchange(self, scope, buf[: end + 4])  # it decides; daphne answers the rest
            self.exchange = pipe
            self.buffer = rest
            pipe.task = self.factory.loop.create_task(pipe.run())
            return
        self.exchange = exchange
        if exchange.body_left and rest:
            rest = exchange.feed(rest)
        self.buffer = rest
        exchange.task = task = self.factory.loop.create_task(
            self.server.application(scope=scope, receive=exchange.receive, send=exchange.send)
        )
        task.add_done_callback(exchange.application_done)

    def _parse(self, head: bytes) -> tuple[Any, dict]:
        """The request's :class:`Exchange` and scope, or for a WebSocket handshake the class that
        takes it (``WebSocketPipe``, ``AgentSocket``) and its scope; ``_Punt`` if it is daphne's."""
        if _BAD_HEAD.search(head) is not None:
            raise _Punt
        lines = head.split(b"\r\n")
        if len(lines) > MAX_HEADERS + 1:
            raise _Punt
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[2] != b"HTTP/1.1":
            raise _Punt
        method, target = parts[0], parts[1]
        tunnel = target.startswith(_TUNNEL_BYTES)
        if not (tunnel or target.startswith(PREFIX_BYTES)) or _TARGET.fullmatch(target) is None:
            raise _Punt
        if HEADER_NAME_RE.fullmatch(method) is None:
            raise _Punt
        server = self.server
        headers = []
        length: int | None = None
        close = upgrade = False
        websocket = False
        root_path = server.root_path
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or HEADER_NAME_RE.fullmatch(name) is None:
                raise _Punt
            name = name.lower()
            value = value.strip(b" \t")
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    raise _Punt
                length = int(value)
            elif name in _PUNT_HEADERS:
                raise _Punt
            elif name == b"upgrade":
                if websocket or value.lower() != b"websocket":
                    raise _Punt
                websocket = True
            elif name == b"connection":
                tokens = {token.strip() for token in value.lower().split(b",")}
                upgrade = upgrade or b"upgrade" in tokens
                close = close or b"close" in tokens
            if b"_" in name:  # daphne drops these (CVE-2015-0219)
                continue
            if name == b"daphne-root-path":
                try:
                    root_path = unquote(value.decode("ascii"))
                except UnicodeDecodeError:
                    raise _Punt from None
                continue
            headers.append((name, value))
        client, scheme = self.client, self.scheme
        if server.proxy_forwarded_address_header:
            first: dict[bytes, bytes] = {}
            for name, value in headers:
                first.setdefault(name, value)  # daphne reads a repeated header's first value
            try:
                client, scheme = parse_x_forwarded_for(
                    first,
                    server.proxy_forwarded_address_header,
                    server.proxy_forwarded_port_header,
                    server.proxy_forwarded_proto_header,
                    client,
                    scheme,
                )
            except UnicodeDecodeError:
                raise _Punt from None
        # A WebSocket handshake (GET, no body) may be piped; any other upgrade is daphne's, and
        # so is anything but a WebSocket handshake on the tunnel path.
        handler = self.factory.tunnel_socket if tunnel else self.factory.websocket_pipe
        if (upgrade or websocket or tunnel) and (
            not (upgrade and websocket) or method != b"GET" or length or handler is None
        ):
            raise _Punt
        raw_path, _, query = target.partition(b"?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method.decode("ascii"),
            "path": unquote(raw_path.decode("ascii")),
            "raw_path": raw_path,
            "root_path": root_path,
            "scheme": scheme,
            "query_string": query,
            "headers": headers,
            "client": client,
            "server": self.server_addr,
        }
        if websocket:  # daphne's WebSocket scope: no method, ws/wss, the offered subprotocols
            del scope["method"]
            scope["type"], scope["scheme"] = "websocket", "wss" if scheme == "https" else "ws"
            scope["subprotocols"] = [
                part.strip().decode("latin-1")
                for name, value in headers
                if name == b"sec-websocket-protocol"
                for part in value.split(b",")
                if part.strip()
            ]
            return handler, scope
        return Exchange(self, method, target, length or 0, close, client), scope

    def become(self, owner: Any) -> bytes:
        """``owner`` (the WebSocket pipe) takes the connection; returns the bytes buffered meanwhile."""
        self.inner = owner
        return self._give_up_connection()

    def _give_up_connection(self) -> bytes:
        """The front stops serving this connection: no idle timer, reading on; the buffered bytes."""
        self._cancel_idle()
        self.exchange = None
        if self.paused:
            self.paused = False
            self.transport.resumeProducing()
        data, self.buffer = self.buffer, b""
        return data

    def _cancel_idle(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()

    def exchange_done(self, exchange: Exchange) -> None:
        """The response is complete: the next request, if the connection is kept."""
        if self.exchange is exchange:
            self.exchange = None
        self.last_data = time.monotonic()  # the idle timeout starts again (Twisted: requestDone)
        if self.lost or exchange.aborted:
            return
        if exchange.close or exchange.body_left:
            # Asked to close, or the application answered before the body was all in.
            self.transport.loseConnection()
            return
        if self.paused:
            self.paused = False
            self.transport.resumeProducing()
        if self.buffer:
            self._next()

    def hand_over(self, prefix: bytes = b"") -> None:
        """daphne's HTTP protocol takes the connection, with the bytes received so far.

        ``prefix``: bytes taken out of the buffer earlier (a WebSocket handshake the pipe gave up on).
        """
        data = prefix + self._give_up_connection()
        inner = self.factory.build_daphne_protocol(self.addr)
        self.inner = inner
        inner.makeConnection(self.transport)
        if data:
            inner.dataReceived(data)

    def _check_idle(self) -> None:
        """Twisted's idle timeout for HTTP connections (daphne's factory sets it)."""
        self._idle = None
        if self.lost or self.inner is not None:
            return
        timeout = self.factory.timeOut
        left = self.last_data + timeout - time.monotonic()
        exchange = self.exchange
        if left <= 0 and (exchange is None or exchange.body_left):
            # Idle between requests, or a request body that stopped arriving (Twisted times both out).
            self.transport.loseConnection()
            return
        self._idle = self.factory.reactor.callLater(max(left, 1.0), self._check_idle)

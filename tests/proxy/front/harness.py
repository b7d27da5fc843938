"""The harness for the front's tests (``streamspace.front.protocol``): it is driven byte by byte.

No daphne process, no network, no database: a :class:`FrontProtocol` on a Twisted
``StringTransport``, a fake daphne server object, a Twisted ``Clock`` for the idle timer and
the application close timeout, and a recording stand-in for daphne's own HTTP protocol, so
that every hand-over is checked byte for byte. The ASGI application is a tiny one written
here (it records its scope and what ``receive`` returned), so these tests check the front,
not the proxy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from streamspace.front.protocol import MAX_HEAD, FrontFactory

SID = "0b7d2c55-51f1-4b5c-9b7e-1a2b3c4d5e6f"
PATH = f"/api/v1/http/{SID}/app/index.html".encode()
OTHER = b"GET /api/v1/sessions HTTP/1.1\r\nHost: cp.example\r\n\r\n"
PEER = IPv4Address("TCP", "192.0.2.10", 50123)
HOST = IPv4Address("TCP", "10.0.0.5", 8000)
CLOSE_TIMEOUT = 10.0
IDLE = 60.0


# -- requests and responses on the wire --


def request(
    *headers: bytes,
    target: bytes = PATH,
    method: bytes = b"GET",
    body: bytes = b"",
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """A request's bytes: a Host header, ``headers`` as given, a Content-Length when there is a body."""
    lines = [b"%s %s %s" % (method, target, version), b"Host: cp.example", *headers]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def get(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key.lower() == name]


def _dechunk(data: bytes) -> tuple[bytes, int] | None:
    """A chunked body (strict framing, no extensions or trailers) and the bytes it took; None if incomplete."""
    body, pos = b"", 0
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size_text = data[pos:line_end]
        assert size_text == b"%x" % int(size_text, 16), f"bad chunk size line {size_text!r}"
        size = int(size_text, 16)
        start = line_end + 2
        if len(data) < start + size + 2:
            return None
        assert data[start + size : start + size + 2] == b"\r\n", "chunk not followed by CRLF"
        if size == 0:
            return body, start + 2
        body += data[start : start + size]
        pos = start + size + 2


def parse_responses(data: bytes, *, bodiless: bool = False) -> list[Response]:
    """The complete responses at the start of ``data`` (``bodiless``: answers to HEAD)."""
    responses = []
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            break
        status_line, *lines = data[:end].split(b"\r\n")
        version, status, _reason = status_line.split(b" ", 2)
        assert version == b"HTTP/1.1"
        headers = []
        for line in lines:
            name, sep, value = line.partition(b":")
            assert sep, f"not a header line: {line!r}"
            headers.append((name, value.strip(b" ")))
        response = Response(int(status), headers, b"")
        rest = data[end + 4 :]
        if bodiless or response.status in (204, 304):
            used = 0
        elif response.get(b"transfer-encoding") == [b"chunked"]:
            assert not response.get(b"content-length")
            dechunked = _dechunk(rest)
            if dechunked is None:
                break
            response.body, used = dechunked
        else:
            (length,) = response.get(b"content-length")
            used = int(length)
            if len(rest) < used:
                break
            response.body = rest[:used]
        responses.append(response)
        data = rest[used:]
    return responses


async def until(condition: Callable[[], Any], what: str = "the condition") -> None:
    """Let the event loop run until ``condition()`` holds (bounded: no fixed sleeps)."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


async def settle() -> None:
    """Let every task that can make progress do so."""
    for _ in range(20):
        await asyncio.sleep(0)


# -- the ASGI application --


@dataclass
class Call:
    """One run of the application: its scope, and what ``receive`` returned."""

    scope: dict
    receive: Callable[[], Awaitable[dict]]
    send: Callable[[dict], Awaitable[None]]
    task: asyncio.Task
    messages: list[dict] = field(default_factory=list)

    async def read(self) -> dict:
        message = await self.receive()
        self.messages.append(message)
        return message

    async def read_body(self) -> bytes:
        body = b""
        while True:
            message = await self.read()
            if message["type"] != "http.request":
                return body
            body += message["body"]
            if not message["more_body"]:
                return body

    async def start(self, status: int = 200, headers: Any = ((b"content-type", b"text/plain"),)) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": list(headers)})

    async def body(self, body: bytes = b"", more: bool = False) -> None:
        await self.send({"type": "http.response.body", "body": body, "more_body": more})

    async def respond(self, body: bytes, status: int = 200, headers: Any = ((b"content-type", b"text/plain"),)) -> None:
        await self.start(status, headers)
        await self.body(body)


Handler = Callable[[Call], Awaitable[None]]


async def echo(call: Call) -> None:
    """Read the whole body; answer it back (or the path when there is none)."""
    body = await call.read_body()
    await call.respond(body or call.scope["path"].encode())


class App:
    def __init__(self, handler: Handler = echo) -> None:
        self.handler = handler
        self.calls: list[Call] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        call = Call(scope, receive, send, asyncio.current_task())
        self.calls.append(call)
        await self.handler(call)


def gated(gate: asyncio.Event, then: Handler = echo) -> Handler:
    """A handler that waits for ``gate`` before doing what ``then`` does."""

    async def handler(call: Call) -> None:
        await gate.wait()
        await then(call)

    return handler


# -- the connection: transport, fake daphne server, daphne's protocol stand-in --


class Transport(StringTransport):
    """A StringTransport that records closing, aborting and flow control in order."""

    bufferSize = 64 * 1024  # a real TCP transport's attribute (flow.OutboundFlow raises it)

    def __init__(self, peer: Any = PEER, host: Any = HOST) -> None:
        super().__init__(hostAddress=host, peerAddress=peer)
        self.events: list[str] = []
        self.no_delay: bool | None = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled

    def loseConnection(self) -> None:
        self.events.append("lose")
        super().loseConnection()

    def abortConnection(self) -> None:
        self.events.append("abort")
        self.disconnected = self.disconnecting = True

    def pauseProducing(self) -> None:
        self.events.append("pause")
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self.events.append("resume")
        super().resumeProducing()


class FakeServer:
    """The attributes of daphne's ``Server`` the front reads."""

    def __init__(self, application: Any, **settings: Any) -> None:
        self.application = application
        self.root_path = ""
        self.server_name = "daphne"
        self.proxy_forwarded_address_header: str | None = None
        self.proxy_forwarded_port_header: str | None = None
        self.proxy_forwarded_proto_header: str | None = None
        self.application_close_timeout = CLOSE_TIMEOUT
        self.access_log: list[tuple[str, str, dict]] = []
        for name, value in settings.items():
            if not hasattr(self, name):
                raise TypeError(f"FakeServer has no {name}")
            setattr(self, name, value)

    def log_action(self, protocol: str, action: str, details: dict) -> None:
        self.access_log.append((protocol, action, details))

    # What daphne's own WebRequest calls (only the real hand-over test gets that far).
    def protocol_connected(self, protocol: Any) -> None:
        pass

    def protocol_disconnected(self, protocol: Any) -> None:
        pass


class DaphneStandIn(Protocol):
    """Records what daphne's HTTP protocol would have been given."""

    def __init__(self, addr: Any) -> None:
        self.addr = addr
        self.made = 0
        self.chunks: list[bytes] = []
        self.lost: list[Any] = []

    def connectionMade(self) -> None:
        self.made += 1

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.append(reason)

    @property
    def received(self) -> bytes:
        return b"".join(self.chunks)


class Conn:
    """One client connection to a FrontProtocol."""

    def __init__(
        self,
        app: App,
        clock: Clock,
        *,
        timeout: float | None = None,
        head_timeout: float | None = None,
        transport: Transport | None = None,
        real_daphne: bool = False,
        **settings: Any,
    ) -> None:
        self.app = app
        self.clock = clock
        self.server = FakeServer(app, **settings)
        factory = self.factory = FrontFactory.__new__(FrontFactory)  # no daphne Server, no global reactor
        factory.server = self.server
        factory.loop = asyncio.get_running_loop()
        factory.reactor = clock
        factory.timeOut = timeout
        factory.head_timeout = head_timeout
        self.daphne: list[DaphneStandIn] = []
        if not real_daphne:
            factory.build_daphne_protocol = self._build_daphne
        self.transport = transport or Transport()
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)

    def _build_daphne(self, addr: Any) -> DaphneStandIn:
        inner = DaphneStandIn(addr)
        self.daphne.append(inner)
        return inner

    def send(self, *pieces: bytes) -> None:
        for piece in pieces:
            self.protocol.dataReceived(piece)

    @property
    def inner(self) -> DaphneStandIn | None:
        assert len(self.daphne) <= 1, "daphne's protocol built more than once"
        return self.daphne[0] if self.daphne else None

    @property
    def written(self) -> bytes:
        return self.transport.value()

    def responses(self, *, bodiless: bool = False) -> list[Response]:
        return parse_responses(self.written, bodiless=bodiless)

    async def response(self, count: int = 1, *, bodiless: bool = False) -> list[Response]:
        await until(lambda: len(self.responses(bodiless=bodiless)) >= count, f"{count} response(s)")
        return self.responses(bodiless=bodiless)

    async def calls(self, count: int) -> list[Call]:
        await until(lambda: len(self.app.calls) >= count, f"{count} application call(s)")
        return self.app.calls

    def disconnect(self) -> None:
        self.protocol.connectionLost(None)

    @property
    def closed(self) -> bool:
        return "lose" in self.transport.events or "abort" in self.transport.events


def assert_handed_over(conn: Conn, data: bytes) -> None:
    """daphne's protocol took the connection with exactly ``data``; the front wrote and ran nothing."""
    inner = conn.inner
    assert inner is not None, "not handed over"
    assert inner.received == data
    assert inner.made == 1 and inner.transport is conn.transport and inner.addr == PEER
    assert conn.app.calls == [] and conn.written == b""


def too_long_head(blank_line: bool) -> bytes:
    """A request head one ``MAX_HEAD`` header long (with or without its blank line)."""
    head = b"GET " + PATH + b" HTTP/1.1\r\nHost: cp.example\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\n"
    return head + b"\r\n" if blank_line else head

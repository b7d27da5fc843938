"""The lean HTTP/1.1 front (``sessions_app.proxy.front``), driven byte by byte.

No daphne process, no network, no database: a :class:`FrontProtocol` on a Twisted
``StringTransport``, a fake daphne server object, a Twisted ``Clock`` for the idle timer and
the application close timeout, and a recording stand-in for daphne's own HTTP protocol, so
that every hand-over is checked byte for byte. The ASGI application is a tiny one written
here (it records its scope and what ``receive`` returned), so these tests check the front,
not the proxy.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import twisted.internet
from daphne.http_protocol import WebRequest
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import alsoProvides

from sessions_app.proxy import flow, front
from sessions_app.proxy.exchange import BODY_HIGH
from sessions_app.proxy.front import MAX_HEAD, MAX_HEADERS, FrontFactory, FrontProtocol

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


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """A Twisted clock that is also the front's monotonic time (its idle timer reads both)."""
    clock = Clock()
    monkeypatch.setattr(front, "time", types.SimpleNamespace(monotonic=clock.seconds, time=time.time))
    return clock


@pytest.fixture
async def connect(clock):
    """``connect(handler or App, **options)``: a new connection; application tasks are cancelled after the test."""
    conns: list[Conn] = []

    def connect(app: App | Handler | None = None, **options: Any) -> Conn:
        if not isinstance(app, App):
            app = App(app or echo)
        conn = Conn(app, clock, **options)
        conns.append(conn)
        return conn

    yield connect
    tasks = [call.task for conn in conns for call in conn.app.calls if not call.task.done()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- building the factory and the protocol --


def _install_reactor(monkeypatch, reactor: Any) -> None:
    """Make ``from twisted.internet import reactor`` return ``reactor`` (no global reactor installed)."""
    monkeypatch.setattr(twisted.internet, "reactor", reactor, raising=False)


async def test_factory_takes_the_loop_under_the_reactor_and_builds_front_protocols(monkeypatch):
    reactor, reactor_loop = Clock(), asyncio.new_event_loop()
    reactor._asyncioEventloop = reactor_loop
    _install_reactor(monkeypatch, reactor)
    server = FakeServer(App())
    try:
        factory = FrontFactory(server)
    finally:
        reactor_loop.close()
    assert factory.server is server and factory.reactor is reactor
    assert factory.loop is reactor_loop
    protocol = factory.buildProtocol(PEER)
    assert isinstance(protocol, FrontProtocol)
    assert protocol.factory is factory and protocol.server is server and protocol.addr is PEER
    daphne_protocol = factory.build_daphne_protocol(PEER)
    assert not isinstance(daphne_protocol, FrontProtocol)
    assert daphne_protocol.requestFactory is WebRequest  # daphne's own HTTP channel


async def test_factory_without_an_asyncio_reactor_uses_the_current_loop(monkeypatch):
    _install_reactor(monkeypatch, Clock())
    assert FrontFactory(FakeServer(App())).loop is asyncio.get_running_loop()


async def test_a_handed_over_request_meets_daphnes_real_parser(connect):
    conn = connect(real_daphne=True, timeout=IDLE)
    conn.send(request(b"Content-Length: 5", b"Content-Length: 6", method=b"POST") + b"hello")
    assert conn.written == b"HTTP/1.1 400 Bad Request\r\n\r\n"  # Twisted's answer, as without the front
    assert conn.closed and conn.app.calls == []


async def test_connection_setup_asks_for_no_delay(connect):
    conn = connect()
    assert conn.transport.no_delay is True


async def test_no_delay_failure_is_ignored(connect):
    class NoDelayRefused(Transport):
        def setTcpNoDelay(self, enabled: bool) -> None:
            raise OSError("not a TCP socket")

    conn = connect(transport=NoDelayRefused())
    conn.send(request())
    assert (await conn.response())[0].status == 200


# -- a request served by the front --


async def test_get_under_the_prefix_is_served_by_the_front(connect):
    conn = connect(lambda call: call.respond(b"hello"))
    conn.send(request(target=PATH + b"?a=1"))
    await conn.response()
    assert conn.written == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nserver: daphne\r\n\r\nhello"
    )
    assert conn.inner is None and not conn.closed
    assert len(conn.app.calls) == 1


async def test_scope_is_the_one_daphne_builds(connect):
    conn = connect(root_path="/base")
    target = f"/api/v1/http/{SID}/a%20b/%E2%9C%93/%2F".encode()
    conn.send(request(b"X-Mixed-Case: Value", b"Accept:  text/html \t", b"x-empty:", target=target + b"?q=%20x&y"))
    (call,) = await conn.calls(1)
    assert call.scope == {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "path": f"/api/v1/http/{SID}/a b/\u2713//",
        "raw_path": target,
        "root_path": "/base",
        "scheme": "http",
        "query_string": b"q=%20x&y",
        "headers": [
            (b"host", b"cp.example"),
            (b"x-mixed-case", b"Value"),
            (b"accept", b"text/html"),
            (b"x-empty", b""),
        ],
        "client": ["192.0.2.10", 50123],
        "server": ["10.0.0.5", 8000],
    }


async def test_access_log_line_is_daphnes(connect):
    conn = connect(lambda call: call.respond(b"0123456789", status=201))
    conn.send(request(target=PATH + b"?x=1", method=b"DELETE"))
    await conn.response()
    ((protocol, action, details),) = conn.server.access_log
    assert (protocol, action) == ("http", "complete")
    time_taken = details.pop("time_taken")
    assert isinstance(time_taken, float) and 0 <= time_taken < 60
    assert details == {
        "path": PATH.decode() + "?x=1",
        "status": 201,
        "method": "DELETE",
        "client": "192.0.2.10:50123",
        "size": 10,
    }


async def test_a_failing_access_log_does_not_break_the_response(connect):
    conn = connect()

    def broken_log(*args: Any) -> None:
        raise RuntimeError("log sink gone")

    conn.server.log_action = broken_log
    conn.send(request(), request())
    assert [response.status for response in await conn.response(2)] == [200, 200]


@pytest.mark.parametrize(
    ("server_name", "app_headers", "expected"),
    [
        ("daphne", [], [b"daphne"]),
        ("", [], []),
        ("daphne", [(b"Server", b"upstream/1.0")], [b"upstream/1.0"]),
    ],
    ids=["added", "no-server-name", "application-set"],
)
async def test_server_header(connect, server_name, app_headers, expected):
    conn = connect(lambda call: call.respond(b"x", headers=app_headers), server_name=server_name)
    conn.send(request())
    (response,) = await conn.response()
    assert response.get(b"server") == expected


async def test_tls_connection_has_https_scheme(connect):
    transport = Transport()
    alsoProvides(transport, ISSLTransport)
    conn = connect(transport=transport)
    conn.send(request())
    (call,) = await conn.calls(1)
    assert call.scope["scheme"] == "https"


async def test_unix_socket_client_has_no_address(connect):
    conn = connect(transport=Transport(peer=UNIXAddress(None), host=UNIXAddress(b"/run/daphne.sock")))
    conn.send(request())
    await conn.response()
    scope = conn.app.calls[0].scope
    assert scope["client"] is None and scope["server"] is None
    assert conn.server.access_log[0][2]["client"] is None


# -- hand-over to daphne --


def _pieces(data: bytes, how: str) -> list[bytes]:
    if how == "whole":
        return [data]
    if how == "bytewise":
        return [data[i : i + 1] for i in range(len(data))]
    middle = len(data) // 2
    return [data[:7], data[7:middle], data[middle:]]


def assert_handed_over(conn: Conn, data: bytes) -> None:
    """daphne's protocol took the connection with exactly ``data``; the front wrote and ran nothing."""
    inner = conn.inner
    assert inner is not None, "not handed over"
    assert inner.received == data
    assert inner.made == 1 and inner.transport is conn.transport and inner.addr == PEER
    assert conn.app.calls == [] and conn.written == b""


@pytest.mark.parametrize("how", ["whole", "bytewise", "thirds"])
async def test_other_paths_are_handed_to_daphne_with_the_exact_bytes(connect, how):
    conn = connect()
    data = request(b"Authorization: Bearer x", target=b"/api/v1/sessions", method=b"POST", body=b'{"a": 1}')
    conn.send(*_pieces(data, how))
    await settle()
    assert_handed_over(conn, data)


async def test_bytes_after_the_hand_over_go_straight_to_daphne(connect):
    conn = connect()
    conn.send(OTHER[:40])
    assert conn.inner is not None  # the request line was enough
    conn.send(OTHER[40:], b"\x00 anything at all \xff")
    assert conn.inner.chunks == [OTHER[:40], OTHER[40:], b"\x00 anything at all \xff"]
    conn.disconnect()
    assert conn.inner.lost == [None]


async def test_hand_over_after_a_front_served_request(connect):
    conn = connect()
    conn.send(request())
    await conn.response()
    assert conn.inner is None
    conn.send(OTHER)
    assert conn.inner.received == OTHER
    assert len(conn.responses()) == 1 and len(conn.app.calls) == 1


async def test_pipelined_hand_over_waits_for_the_front_served_response(connect):
    gate = asyncio.Event()
    conn = connect(gated(gate))
    conn.send(request() + OTHER)
    await settle()
    assert conn.inner is None  # daphne must not answer before the front has
    gate.set()
    (response,) = await conn.response()
    assert response.body == PATH
    assert conn.inner.received == OTHER


def _many_headers(count: int) -> list[bytes]:
    return [b"X-H%d: %d" % (i, i) for i in range(count)]


def _too_long_head(blank_line: bool) -> bytes:
    head = b"GET " + PATH + b" HTTP/1.1\r\nHost: cp.example\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\n"
    return head + b"\r\n" if blank_line else head


PUNTED = {
    "http-1.0": request(version=b"HTTP/1.0"),
    "lowercase-version": request(version=b"http/1.1"),
    "chunked": request(b"Transfer-Encoding: chunked", method=b"POST") + b"5\r\nhello\r\n0\r\n\r\n",
    "expect": request(b"Content-Length: 5", b"Expect: 100-continue", method=b"POST"),
    "websocket": request(b"Connection: Upgrade", b"Upgrade: websocket", b"Sec-WebSocket-Version: 13"),
    "upgrade-header": request(b"Upgrade: h2c"),
    "connection-upgrade": request(b"Connection: keep-alive, Upgrade"),
    "two-content-lengths": request(b"Content-Length: 5", b"Content-Length: 5", method=b"POST") + b"hello",
    "content-length-sign": request(b"Content-Length: +5", method=b"POST") + b"hello",
    "content-length-negative": request(b"Content-Length: -1", method=b"POST"),
    "content-length-letters": request(b"Content-Length: 5x", method=b"POST") + b"hello",
    "content-length-empty": request(b"Content-Length:", method=b"POST"),
    "bare-lf": b"GET " + PATH + b" HTTP/1.1\r\nHost: cp.example\nX-A: 1\r\n\r\n",
    "lone-cr": b"GET " + PATH + b" HTTP/1.1\r\nHost: cp.example\rX-A: 1\r\n\r\n",
    "nul-in-value": request(b"X-A: a\x00b"),
    "vtab-in-value": request(b"X-A: a\x0bb"),
    "formfeed-in-value": request(b"X-A: a\x0cb"),
    "nel-in-value": request(b"X-A: a\x85b"),
    "obs-fold": request(b"X-A: first", b" folded"),
    "space-in-name": request(b"X A: 1"),
    "space-before-colon": request(b"X-A : 1"),
    "no-colon": request(b"X-A 1"),
    "empty-name": request(b": 1"),
    "non-ascii-target": request(target=PATH + b"/caf\xc3\xa9"),
    "space-in-target": b"GET " + PATH + b"/a b HTTP/1.1\r\nHost: cp.example\r\n\r\n",
    "control-in-target": request(target=PATH + b"/a\x7f"),
    "absolute-form-target": request(target=b"http://cp.example" + PATH),
    "bad-method": request(method=b"G(T"),
    "non-ascii-root-path": request(b"Daphne-Root-Path: /caf\xc3\xa9"),
    "too-many-headers": request(*_many_headers(MAX_HEADERS)),  # with Host: one over
    "head-over-max-head": _too_long_head(blank_line=True),
    "head-over-max-head-unfinished": _too_long_head(blank_line=False),
    "request-line-over-max-head": b"GET " + PATH + b"a" * MAX_HEAD,
}


@pytest.mark.parametrize("data", list(PUNTED.values()), ids=list(PUNTED))
async def test_requests_the_front_does_not_serve_are_handed_over(connect, data):
    conn = connect()
    conn.send(data)
    await settle()
    assert_handed_over(conn, data)


async def test_at_most_max_headers_lines_are_served(connect):
    conn = connect()
    conn.send(request(*_many_headers(MAX_HEADERS - 1)))  # with Host: exactly MAX_HEADERS
    (call,) = await conn.calls(1)
    assert len(call.scope["headers"]) == MAX_HEADERS and conn.inner is None


async def test_a_dribbled_head_is_handed_over_once_it_exceeds_max_head(connect):
    conn = connect()
    pieces = [b"GET " + PATH + b" HTTP/1.1\r\n"] + [b"X-Slow-%04d: %s\r\n" % (i, b"s" * 100) for i in range(200)]
    sent = b""
    for piece in pieces:
        conn.send(piece)
        sent += piece
        assert (conn.inner is not None) == (len(sent) > MAX_HEAD), len(sent)
    assert_handed_over(conn, sent)


# -- request headers --


async def test_headers_with_underscores_are_dropped_and_root_path_is_taken(connect):
    conn = connect(root_path="/ignored")
    conn.send(
        request(
            b"X_Forwarded_For: 6.6.6.6",
            b"Content_Length: 4",
            b"Transfer_Encoding: chunked",
            b"Daphne-Root-Path: /pre%20fix",
            b"X-Kept: yes",
        )
    )
    (call,) = await conn.calls(1)
    assert call.scope["headers"] == [(b"host", b"cp.example"), (b"x-kept", b"yes")]
    assert call.scope["root_path"] == "/pre fix"
    (response,) = await conn.response()
    assert response.status == 200  # Content_Length made no body to wait for


PROXY_HEADERS = {
    "proxy_forwarded_address_header": "X-Forwarded-For",
    "proxy_forwarded_port_header": "X-Forwarded-Port",
    "proxy_forwarded_proto_header": "X-Forwarded-Proto",
}
FORWARDED = (b"X-Forwarded-For: 203.0.113.7, 10.1.1.1", b"X-Forwarded-Port: 4711", b"X-Forwarded-Proto: https")


@pytest.mark.parametrize(
    ("server_settings", "client", "scheme"),
    [
        (PROXY_HEADERS, ["203.0.113.7", 4711], "https"),
        ({}, ["192.0.2.10", 50123], "http"),
    ],
    ids=["proxy-headers", "not-trusted"],
)
async def test_forwarded_headers_set_client_and_scheme_when_trusted(connect, server_settings, client, scheme):
    conn = connect(**server_settings)
    conn.send(request(*FORWARDED))
    (call,) = await conn.calls(1)
    assert call.scope["client"] == client and call.scope["scheme"] == scheme
    assert (b"x-forwarded-for", b"203.0.113.7, 10.1.1.1") in call.scope["headers"]


async def test_the_first_forwarded_for_header_wins_as_in_daphne(connect):
    conn = connect(**PROXY_HEADERS)
    conn.send(request(b"X-Forwarded-For: 203.0.113.7", b"X-Forwarded-For: 198.51.100.9"))
    (call,) = await conn.calls(1)
    assert call.scope["client"] == ["203.0.113.7", 0]


async def test_access_log_shows_the_forwarded_client_as_daphne_does(connect):
    conn = connect(**PROXY_HEADERS)
    conn.send(request(*FORWARDED))
    await conn.response()
    assert conn.server.access_log[0][2]["client"] == "203.0.113.7:4711"


async def test_non_utf8_forwarded_header_does_not_break_the_connection(connect):
    conn = connect(**PROXY_HEADERS)
    data = request(b"X-Forwarded-For: 203.0.113.7", b"X-Forwarded-Proto: \xff\xfe")
    conn.send(data)  # actual: UnicodeDecodeError from parse_x_forwarded_for (daphne answers 500)
    await settle()
    assert_handed_over(conn, data)


# -- request bodies --


async def test_a_body_in_several_pieces_arrives_complete_and_in_order(connect):
    conn = connect()
    conn.send(request(method=b"POST", body=b"abcdef")[: -len(b"abcdef")])
    (call,) = await conn.calls(1)
    for count, piece in enumerate([b"ab", b"cd", b"ef"], start=1):
        conn.send(piece)
        await until(lambda count=count: len(call.messages) == count, "the piece is read")
    assert [(m["body"], m["more_body"]) for m in call.messages] == [(b"ab", True), (b"cd", True), (b"ef", False)]
    (response,) = await conn.response()
    assert response.body == b"abcdef"


async def test_pieces_queued_while_the_app_is_busy_arrive_as_one_message(connect):
    gate = asyncio.Event()
    conn = connect(gated(gate))
    conn.send(request(method=b"POST", body=b"abcdef")[:-6], b"ab", b"cd", b"ef")
    gate.set()
    (response,) = await conn.response()
    assert response.body == b"abcdef"
    assert conn.app.calls[0].messages == [{"type": "http.request", "body": b"abcdef", "more_body": False}]


@pytest.mark.parametrize("body", [b"hello world", b""], ids=["with-the-head", "empty"])
async def test_a_body_arriving_with_the_head_is_one_message(connect, body):
    conn = connect()
    conn.send(request(b"Content-Length: %d" % len(body), method=b"POST") + body)
    await conn.response()
    assert conn.app.calls[0].messages == [{"type": "http.request", "body": body, "more_body": False}]


async def test_pipelined_requests_are_answered_in_order_one_at_a_time(connect):
    gate = asyncio.Event()
    conn = connect(gated(gate))
    second = PATH + b"/second"
    conn.send(
        request(method=b"POST", body=b"first body") + request(target=second) + request(target=PATH + b"/third")[:20]
    )
    await settle()
    assert len(conn.app.calls) == 1  # the next request waits for the response in flight
    gate.set()
    first_response, second_response = await conn.response(2)
    assert first_response.body == b"first body"
    assert second_response.body == second
    assert conn.app.calls[1].messages == [{"type": "http.request", "body": b"", "more_body": False}]
    conn.send(request(target=PATH + b"/third")[20:])
    assert (await conn.response(3))[2].body == PATH + b"/third"


async def test_a_large_unread_body_pauses_reading_until_the_app_reads(connect):
    gate = asyncio.Event()
    conn = connect(gated(gate))
    size = BODY_HIGH + 10
    conn.send(request(b"Content-Length: %d" % size, method=b"POST"), b"x" * BODY_HIGH)
    await conn.calls(1)
    assert conn.transport.events == []  # BODY_HIGH itself may be queued
    conn.send(b"y")
    assert conn.transport.events == ["pause"] and conn.transport.producerState == "paused"
    gate.set()
    await until(lambda: conn.app.calls[0].messages, "the body is read")
    assert conn.transport.events == ["pause", "resume"]
    conn.send(b"z" * 9)
    (response,) = await conn.response()
    assert response.body == b"x" * BODY_HIGH + b"y" + b"z" * 9


async def test_pipelined_bytes_beyond_max_head_pause_reading_until_the_response(connect):
    gate = asyncio.Event()
    conn = connect(gated(gate))
    conn.send(request())
    await conn.calls(1)
    pipelined = _too_long_head(blank_line=False)
    conn.send(pipelined)
    assert conn.transport.events == ["pause"] and conn.inner is None
    gate.set()
    await conn.response()
    assert conn.transport.events == ["pause", "resume"]
    assert conn.inner.received == pipelined  # then daphne refuses it


async def test_answer_before_the_body_is_in_closes_the_connection(connect):
    conn = connect(lambda call: call.respond(b"too large", status=413))
    conn.send(request(b"Content-Length: 100", method=b"POST") + b"abc")
    (response,) = await conn.response()
    assert response.status == 413 and response.get(b"connection") == [b"close"]
    assert conn.transport.events == ["lose"]


async def test_connection_close_announced_mid_upload_is_honoured(connect):
    async def early_head(call: Call) -> None:
        await call.read()  # the first half of the body
        await call.start()
        await call.body(b"partial ", more=True)  # head written while the body is still arriving
        await call.read_body()
        await call.body(b"done")

    conn = connect(early_head)
    conn.send(request(b"Content-Length: 10", method=b"POST") + b"01234")
    await until(lambda: conn.written, "the head is written")
    assert b"connection: close\r\n" in conn.written
    conn.send(b"56789")
    await conn.response()
    assert conn.closed  # actual: kept open (and a pipelined request would still be served)


# -- response framing --


async def test_streamed_response_without_length_is_chunked(connect):
    async def stream(call: Call) -> None:
        await call.start()
        for piece in (b"ab", b"", b"0123456789abcdef" * 2):
            await call.body(piece, more=True)
        await call.body(b"z")

    conn = connect(stream)
    conn.send(request())
    await conn.response()
    assert conn.written == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\nserver: daphne\r\n\r\n"
        b"2\r\nab\r\n20\r\n0123456789abcdef0123456789abcdef\r\n1\r\nz\r\n0\r\n\r\n"
    )
    assert conn.server.access_log[0][2]["size"] == 35


async def test_streamed_response_ending_with_an_empty_message(connect):
    async def stream(call: Call) -> None:
        await call.start()
        await call.body(b"abc", more=True)
        await call.body()

    conn = connect(stream)
    conn.send(request(), request())
    first, second = await conn.response(2)
    assert first.body == b"abc" and second.body == b"abc"
    assert conn.written.count(b"3\r\nabc\r\n0\r\n\r\n") == 2


async def test_application_content_length_is_not_chunked(connect):
    async def stream(call: Call) -> None:
        await call.start(headers=[(b"Content-Length", b"6")])
        await call.body(b"abc", more=True)
        await call.body(b"def")

    conn = connect(stream)
    conn.send(request())
    await conn.response()
    assert conn.written == b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nserver: daphne\r\n\r\nabcdef"


@pytest.mark.parametrize(
    "headers", [[(b"content-length", b"5")], [(b"content-type", b"text/plain")]], ids=["with-length", "no-length"]
)
async def test_head_gets_the_headers_and_no_body(connect, headers):
    conn = connect(lambda call: call.respond(b"hello", headers=headers))
    conn.send(request(method=b"HEAD"))
    await until(lambda: conn.server.access_log, "the response")
    head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    assert conn.written == b"HTTP/1.1 200 OK\r\n" + head + b"server: daphne\r\n\r\n"
    assert conn.server.access_log[0][2]["size"] == 0
    conn.send(request(method=b"HEAD"))  # the connection is still in step
    await until(lambda: len(conn.server.access_log) == 2, "the second response")
    assert conn.written.count(b"HTTP/1.1 200 OK") == 2 and not conn.closed


@pytest.mark.parametrize(("status", "reason"), [(204, b"No Content"), (304, b"Not Modified")])
async def test_no_body_statuses_send_no_body_and_no_length(connect, status, reason):
    conn = connect(lambda call: call.respond(b"ignored", status=status, headers=[]))
    conn.send(request(), request())
    await until(lambda: len(conn.server.access_log) == 2, "both responses")
    assert conn.written == (b"HTTP/1.1 %d %s\r\nserver: daphne\r\n\r\n" % (status, reason)) * 2


async def test_unknown_status_has_a_reason_phrase(connect):
    conn = connect(lambda call: call.respond(b"", status=599))
    conn.send(request())
    await conn.response()
    assert conn.written.startswith(b"HTTP/1.1 599 Unknown Status\r\n")


async def test_header_values_with_cr_or_lf_cannot_split_the_head(connect):
    headers = [(b"x-test", b"a\r\nSet-Cookie: evil=1"), (b"x-lf", b"b\nX-Injected: 1"), (b"x-cr", b"c\rd")]
    conn = connect(lambda call: call.respond(b"ok", headers=headers))
    conn.send(request())
    (response,) = await conn.response()
    assert response.get(b"set-cookie") == [] and response.get(b"x-injected") == []
    assert response.get(b"x-test") == [b"a  Set-Cookie: evil=1"]
    assert response.get(b"x-lf") == [b"b X-Injected: 1"] and response.get(b"x-cr") == [b"c d"]


async def test_header_names_with_cr_lf_are_refused(connect):
    conn = connect(lambda call: call.respond(b"ok", headers=[(b"x-a: 1\r\nset-cookie", b"evil=1")]))
    conn.send(request())
    (response,) = await conn.response()
    assert response.get(b"set-cookie") == []  # Twisted refuses the name (InvalidHeaderName): a 500
    assert response.status == 500


@pytest.mark.parametrize(
    "header",
    [("content-type", b"text/plain"), (b"content-type", "text/plain"), (b"x-n", 5)],
    ids=["str-name", "str-value", "int-value"],
)
async def test_non_bytes_response_header_fails_the_application(connect, header):
    conn = connect(lambda call: call.respond(b"ok", headers=[header]))
    conn.send(request())
    (response,) = await conn.response()
    assert response.status == 500 and conn.transport.events == ["lose"]
    assert conn.app.calls[0].task.exception().args == ("header names and values must be bytes",)


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([{"type": "http.response.body", "body": b"x"}], "HTTP response has not yet been started"),
        ([{"type": "http.response.start", "status": 200}] * 2, "HTTP response has already been started"),
        ([{"type": "http.response.trailers"}], "Cannot handle message type http.response.trailers!"),
    ],
    ids=["body-before-start", "start-twice", "unknown-type"],
)
async def test_send_refuses_out_of_order_messages(connect, messages, error):
    async def misbehave(call: Call) -> None:
        for message in messages:
            await call.send(message)

    conn = connect(misbehave)
    conn.send(request())
    (response,) = await conn.response()
    assert response.status == 500
    assert str(conn.app.calls[0].task.exception()).startswith(error)


async def test_messages_after_the_response_are_ignored(connect):
    async def chatty(call: Call) -> None:
        await call.respond(b"one")
        await call.body(b"two")

    conn = connect(chatty)
    conn.send(request())
    await until(lambda: conn.app.calls and conn.app.calls[0].task.done(), "the application ends")
    assert conn.written.endswith(b"\r\n\r\none") and len(conn.server.access_log) == 1


async def test_a_final_send_that_fails_to_write_ends_the_connection(connect):
    conn = connect(lambda call: call.respond("not bytes"))  # type: ignore[arg-type]
    conn.send(request())
    await until(lambda: conn.app.calls and conn.app.calls[0].task.done(), "the application fails")
    assert isinstance(conn.app.calls[0].task.exception(), TypeError)
    await until(lambda: conn.closed, "the connection ends")
    (response,) = await conn.response()
    assert response.status == 500


# -- keep-alive and close --


@pytest.mark.parametrize("connection", [b"close", b"keep-alive, Close"])
async def test_connection_close_is_answered_and_honoured(connect, connection):
    conn = connect()
    conn.send(request(b"Connection: " + connection) + request())
    (response,) = await conn.response()
    assert response.get(b"connection") == [b"close"]
    await settle()
    assert conn.transport.events == ["lose"] and len(conn.app.calls) == 1


async def test_keep_alive_serves_the_next_request_on_the_same_connection(connect):
    conn = connect()
    conn.send(request(target=PATH + b"/1"))
    await conn.response()
    conn.send(request(b"Connection: keep-alive", target=PATH + b"/2"))
    first, second = await conn.response(2)
    assert (first.body, second.body) == (PATH + b"/1", PATH + b"/2")
    assert first.get(b"connection") == second.get(b"connection") == []
    assert not conn.closed


# -- application failures --


INTERNAL_ERROR = (
    b"<html><head><title>500 Internal Server Error</title></head><body>"
    b"<h1>500 Internal Server Error</h1>Exception inside application.</body></html>"
)


async def _raise_before_start(call: Call) -> None:
    raise RuntimeError("boom")


async def _return_without_response(call: Call) -> None:
    await call.read()


async def _return_after_start(call: Call) -> None:
    await call.start()  # nothing is written before the first body message: still time for a 500


@pytest.mark.parametrize(
    "handler",
    [_raise_before_start, _return_without_response, _return_after_start],
    ids=["raises", "returns", "returns-after-start"],
)
async def test_no_response_from_the_application_is_a_500(connect, handler):
    conn = connect(handler)
    conn.send(request() + request())
    await conn.response()
    await settle()
    assert (
        conn.written
        == (
            b"HTTP/1.1 500 Internal Server Error\r\n"
            b"content-type: text/html; charset=utf-8\r\n"
            b"content-length: %d\r\n"
            b"server: daphne\r\n"
            b"connection: close\r\n\r\n" % len(INTERNAL_ERROR)
        )
        + INTERNAL_ERROR
    )
    assert conn.transport.events == ["lose"] and len(conn.app.calls) == 1
    assert conn.server.access_log[0][2]["status"] == 500


async def _return_after_some_body(call: Call) -> None:
    await call.start()
    await call.body(b"partial", more=True)


async def _raise_after_some_body(call: Call) -> None:
    await _return_after_some_body(call)
    raise RuntimeError("upstream went away")


@pytest.mark.parametrize("handler", [_return_after_some_body, _raise_after_some_body], ids=["returns", "raises"])
async def test_a_response_cut_short_aborts_the_connection(connect, handler):
    conn = connect(handler)
    conn.send(request())
    await until(lambda: conn.closed, "the connection is dropped")
    assert conn.transport.events == ["abort"]
    assert conn.written.startswith(b"HTTP/1.1 200 OK\r\n") and b"500" not in conn.written
    assert conn.responses() == []  # never looks complete


async def test_no_pipelined_request_runs_after_an_abort(connect):
    conn = connect(_raise_after_some_body)
    conn.send(request() + request(b"X-Second: 1", method=b"POST", body=b"side effect"))
    await until(lambda: conn.closed, "the connection is dropped")
    await settle()
    assert len(conn.app.calls) == 1  # actual: the second request's application runs on the aborted connection


# -- the client going away --


@pytest.mark.parametrize(
    ("data", "first"),
    [
        (request(), {"type": "http.request", "body": b"", "more_body": False}),
        (
            request(b"Content-Length: 10", method=b"POST") + b"012",
            {"type": "http.request", "body": b"012", "more_body": True},
        ),
    ],
    ids=["waiting-for-disconnect", "mid-upload"],
)
async def test_client_disconnect_reaches_a_pending_receive(connect, data, first):
    async def lingering(call: Call) -> None:
        while (await call.read())["type"] != "http.disconnect":
            pass
        await call.respond(b"too late")
        await asyncio.Event().wait()  # an application that does not end by itself

    conn = connect(lingering)
    conn.send(data)
    (call,) = await conn.calls(1)
    await settle()
    assert call.messages == [first]  # and receive() is pending
    conn.disconnect()
    await until(lambda: len(call.messages) == 2, "receive() returns")
    assert call.messages == [first, {"type": "http.disconnect"}]
    await settle()
    assert conn.written == b""  # nothing is written after the client left
    conn.clock.advance(CLOSE_TIMEOUT - 0.5)
    await settle()
    assert not call.task.done()
    conn.clock.advance(0.5)
    await until(call.task.done, "the application is cancelled")
    assert call.task.cancelled()


async def test_disconnect_wins_over_queued_body(connect):
    gate = asyncio.Event()
    conn = connect(gated(gate, lambda call: call.read()))
    conn.send(request(b"Content-Length: 10", method=b"POST") + b"01234")
    (call,) = await conn.calls(1)
    conn.disconnect()
    gate.set()
    await until(call.task.done, "the application ends")
    assert call.messages == [{"type": "http.disconnect"}]
    assert conn.written == b""


async def test_receive_after_the_response_returns_disconnect(connect):
    got: list[dict] = []

    async def after_response(call: Call) -> None:
        await call.read_body()
        await call.respond(b"done")
        got.append(await call.receive())  # ASGI: http.disconnect once the response is sent

    conn = connect(after_response)
    conn.send(request())
    await conn.response()
    await settle()
    assert got == [{"type": "http.disconnect"}]


# -- flow control hooks used by sessions_app.proxy.flow --


async def test_outbound_flow_registers_a_producer_on_the_front_transport(connect):
    attached = asyncio.Event()
    release = asyncio.Event()
    flows: list[flow.OutboundFlow] = []

    async def streaming(call: Call) -> None:
        flows.append(flow.OutboundFlow.attach(call.send, websocket=False))
        attached.set()
        await call.start()
        await release.wait()
        await flows[0].wait()
        await call.body(b"after drain")
        flows[0].detach()

    conn = connect(streaming)
    conn.send(request())
    await attached.wait()
    (outbound,) = flows
    assert conn.transport.producer is outbound and conn.transport.streaming is True
    assert conn.transport.bufferSize == flow.OUTBOUND_BUFFER
    outbound.pauseProducing()  # Twisted: the client is not reading
    release.set()
    await settle()
    assert not conn.responses()
    outbound.resumeProducing()
    (response,) = await conn.response()
    assert response.body == b"after drain"
    assert conn.transport.producer is None


async def test_abort_connection_drops_the_front_connection(connect):
    results: list[bool] = []

    async def aborting(call: Call) -> None:
        await call.start()
        await call.body(b"partial", more=True)
        results.append(flow.abort_connection(call.send))
        await call.body(b"more after the abort", more=True)
        await call.body(b"end")

    conn = connect(aborting)
    conn.send(request())
    await until(lambda: results, "the abort")
    await settle()
    assert results == [True] and conn.transport.events == ["abort"]
    assert conn.written.endswith(b"7\r\npartial\r\n") and conn.server.access_log == []


# -- the idle timeout --


async def test_an_idle_connection_is_closed_after_the_timeout(connect, clock):
    conn = connect(timeout=IDLE)
    clock.advance(IDLE - 1)
    assert not conn.closed
    clock.advance(1)
    assert conn.transport.events == ["lose"]


async def test_activity_postpones_the_idle_timeout(connect, clock):
    conn = connect(timeout=IDLE)
    clock.advance(30)
    conn.send(request()[:10])
    clock.advance(IDLE - 1)  # 89 s after connecting, 59 s after the last byte
    assert not conn.closed
    conn.send(request()[10:])
    await conn.response()
    clock.advance(IDLE - 1)
    assert not conn.closed
    clock.advance(1)
    assert conn.transport.events == ["lose"]


async def test_a_request_in_progress_is_not_timed_out(connect, clock):
    gate = asyncio.Event()
    conn = connect(gated(gate), timeout=IDLE)
    conn.send(request())
    await conn.calls(1)
    clock.advance(IDLE * 3)
    assert not conn.closed
    gate.set()
    assert (await conn.response())[0].status == 200


async def test_the_idle_timeout_restarts_when_a_long_response_ends(connect, clock):
    gate = asyncio.Event()
    conn = connect(gated(gate), timeout=IDLE)
    conn.send(request())
    await conn.calls(1)
    clock.advance(IDLE + 30)  # a slow upstream
    gate.set()
    await conn.response()
    clock.advance(5)  # Twisted restarts the full timeout at the end of the response
    assert not conn.closed


async def test_a_stalled_upload_is_timed_out(connect, clock):
    conn = connect(timeout=IDLE)  # echo: waits for the rest of the body
    conn.send(request(b"Content-Length: 10", method=b"POST") + b"012")
    await conn.calls(1)
    clock.advance(IDLE * 3)  # Twisted's timeout runs until the whole body is in
    assert conn.transport.events == ["lose"]


async def test_hand_over_stops_the_front_idle_timer(connect, clock):
    conn = connect(timeout=IDLE)
    conn.send(OTHER)
    assert conn.inner is not None and clock.getDelayedCalls() == []
    clock.advance(IDLE * 2)
    assert not conn.closed  # daphne's own channel keeps its own timeout


async def test_no_idle_timer_without_a_timeout(connect, clock):
    conn = connect(timeout=None)
    assert clock.getDelayedCalls() == []
    conn.send(request())
    assert (await conn.response())[0].status == 200


async def test_connection_lost_cancels_the_idle_timer(connect, clock):
    conn = connect(timeout=IDLE)
    conn.disconnect()
    assert clock.getDelayedCalls() == []

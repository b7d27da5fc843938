"""The front (``streamspace.front.protocol``): its factory, the requests it serves itself
(scope, access log, headers) and the ones it hands to daphne, byte for byte (harness:
``harness.py``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import twisted.internet
from daphne.http_protocol import WebRequest
from twisted.internet.address import UNIXAddress
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from zope.interface import alsoProvides

from streamspace.api.client_ip import parse_trusted_proxies
from streamspace.front.head import MAX_HEADERS
from streamspace.front.protocol import MAX_HEAD, FrontFactory, FrontProtocol
from tests.proxy.front.harness import (
    IDLE,
    OTHER,
    PATH,
    PEER,
    SID,
    App,
    FakeServer,
    Transport,
    assert_handed_over,
    gated,
    request,
    settle,
    too_long_head,
)

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
    "head-over-max-head": too_long_head(blank_line=True),
    "head-over-max-head-unfinished": too_long_head(blank_line=False),
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
PEER_IP = PEER.host  # the harness' TCP peer


def trust(settings, *proxies: str) -> None:
    settings.STREAMSPACE_TRUSTED_PROXIES = parse_trusted_proxies(proxies)


@pytest.mark.parametrize(
    ("proxies", "client", "scheme"),
    [
        ([PEER_IP], ["10.1.1.1", 0], "https"),  # the address the trusted peer appended
        ([PEER_IP, "10.0.0.0/8"], ["203.0.113.7", 0], "https"),  # the rightmost untrusted one
        ([], [PEER_IP, PEER.port], "http"),  # an untrusted peer's headers mean nothing
    ],
    ids=["trusted-peer", "trusted-chain", "not-trusted"],
)
async def test_forwarded_headers_set_client_and_scheme_when_trusted(connect, settings, proxies, client, scheme):
    trust(settings, *proxies)
    conn = connect(**PROXY_HEADERS)
    conn.send(request(*FORWARDED))
    (call,) = await conn.calls(1)
    assert call.scope["client"] == client and call.scope["scheme"] == scheme
    assert (b"x-forwarded-for", b"203.0.113.7, 10.1.1.1") in call.scope["headers"]


async def test_every_forwarded_for_line_counts_and_the_last_untrusted_address_wins(connect, settings):
    trust(settings, PEER_IP)
    conn = connect(**PROXY_HEADERS)
    conn.send(request(b"X-Forwarded-For: 203.0.113.7", b"X-Forwarded-For: 198.51.100.9"))
    (call,) = await conn.calls(1)
    assert call.scope["client"] == ["198.51.100.9", 0]


async def test_access_log_shows_the_resolved_client(connect, settings):
    trust(settings, PEER_IP, "10.0.0.0/8")
    conn = connect(**PROXY_HEADERS)
    conn.send(request(*FORWARDED))
    await conn.response()
    assert conn.server.access_log[0][2]["client"] == "203.0.113.7:0"


async def test_non_utf8_forwarded_header_does_not_break_the_connection(connect, settings):
    trust(settings, PEER_IP)
    conn = connect(**PROXY_HEADERS)
    conn.send(request(b"X-Forwarded-For: 203.0.113.7", b"X-Forwarded-Proto: \xff\xfe"))
    (call,) = await conn.calls(1)  # served by the front; an unknown scheme is ignored
    assert call.scope["client"] == ["203.0.113.7", 0] and call.scope["scheme"] == "http"
    (response,) = await conn.response()
    assert response.status == 200

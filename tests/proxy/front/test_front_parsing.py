"""The front's request heads as llhttp reads them (``streamspace/front/head.py``).

A head llhttp refuses, or reads in a way daphne might not, is daphne's: the connection is
handed over byte for byte and daphne answers (400 for the framing attacks below), so no
request is ever proxied on an ambiguous reading of where it ends.
"""

from __future__ import annotations

import pytest

from tests.proxy.front.harness import IDLE, OTHER, PATH, assert_handed_over, request, settle

# Two parsers disagreeing on where a body ends is request smuggling: each of these must
# reach daphne (which refuses them) and never the application through the front.
SMUGGLING = {
    "content-length-then-transfer-encoding": request(
        b"Content-Length: 5", b"Transfer-Encoding: chunked", method=b"POST"
    )
    + b"0\r\n\r\n",
    "transfer-encoding-then-content-length": request(
        b"Transfer-Encoding: chunked", b"Content-Length: 5", method=b"POST"
    )
    + b"0\r\n\r\n",
    "identity-transfer-encoding-with-content-length": request(
        b"Transfer-Encoding: identity", b"Content-Length: 5", method=b"POST"
    )
    + b"hello",
    "duplicate-content-length-same": request(b"Content-Length: 5", b"Content-Length: 5", method=b"POST") + b"hello",
    "duplicate-content-length-different": request(b"Content-Length: 5", b"Content-Length: 6", method=b"POST")
    + b"hello!",
    "content-length-list": request(b"Content-Length: 5, 5", method=b"POST") + b"hello",
    "content-length-inner-space": request(b"Content-Length: 1 0", method=b"POST") + b"0123456789",
}

MALFORMED = {
    "obs-fold-space": request(b"X-A: first", b" folded"),
    "obs-fold-tab": request(b"X-A: first", b"\tfolded"),
    "obs-fold-of-transfer-encoding": request(b"X-A: x", b" Transfer-Encoding: chunked", method=b"POST"),
    "whitespace-before-first-header": b"GET " + PATH + b" HTTP/1.1\r\n Host: cp.example\r\n\r\n",
    "del-in-value": request(b"X-A: a\x7fb"),
    "nul-in-name": request(b"X\x00A: 1"),
    "separator-in-name": request(b"X(A): 1"),
    "non-ascii-name": request(b"X-\xc3\xa9: 1"),
    "non-ascii-query": request(target=PATH + b"?q=\xc3\xa9"),
    "non-ascii-fragment": request(target=PATH + b"#\xc3\xa9"),
    "tab-in-target": request(target=PATH + b"/a\tb"),
    "content-length-overflow": request(b"Content-Length: 99999999999999999999999", method=b"POST"),
    "unknown-method": request(method=b"FROB"),
    "lowercase-method": request(method=b"get"),
    "space-after-version": b"GET " + PATH + b" HTTP/1.1 \r\nHost: cp.example\r\n\r\n",
    "bare-lf-line-ends": b"GET " + PATH + b" HTTP/1.1\nHost: cp.example\n\n",
    "bare-lf-after-request-line": b"GET " + PATH + b" HTTP/1.1\nHost: cp.example\r\n\r\n",
    "lf-cr-lf-end": b"GET " + PATH + b" HTTP/1.1\r\nHost: cp.example\n\r\n",
    "http-2-version": request(version=b"HTTP/2.0"),
    "connect-method": b"CONNECT " + PATH + b" HTTP/1.1\r\nHost: cp.example\r\n\r\n",
}


@pytest.mark.parametrize("data", list(SMUGGLING.values()), ids=list(SMUGGLING))
async def test_ambiguous_bodies_are_handed_to_daphne_with_the_exact_bytes(connect, data):
    conn = connect()
    conn.send(data)
    await settle()
    assert_handed_over(conn, data)


# Twisted ignores "Transfer-Encoding: identity" and reads the Content-Length: one reading, daphne's.
REFUSED = {name: data for name, data in SMUGGLING.items() if not name.startswith("identity-")}


@pytest.mark.parametrize("data", list(REFUSED.values()), ids=list(REFUSED))
async def test_daphne_refuses_the_ambiguous_bodies(connect, data):
    conn = connect(real_daphne=True, timeout=IDLE)
    conn.send(data)
    await settle()
    assert conn.written.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert conn.closed and conn.app.calls == []


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_heads_llhttp_refuses_are_handed_to_daphne_at_once(connect, data):
    conn = connect()
    conn.send(data)  # complete heads: nothing is left waiting for more bytes
    await settle()
    assert_handed_over(conn, data)


@pytest.mark.parametrize("name", ["content-length-then-transfer-encoding", "duplicate-content-length-different"])
async def test_a_pipelined_ambiguous_request_goes_to_daphne_after_the_served_one(connect, name):
    conn = connect()
    conn.send(request() + SMUGGLING[name])
    (response,) = await conn.response()
    assert response.status == 200 and len(conn.app.calls) == 1
    assert conn.inner is not None and conn.inner.received == SMUGGLING[name]


async def test_a_head_split_anywhere_is_read_the_same(connect):
    data = request(b"X-A: one", b"X-B: two", method=b"POST", body=b"0123456789")
    conn = connect()
    for i in range(len(data)):
        conn.send(data[i : i + 1])
    (call,) = await conn.calls(1)
    assert call.scope["headers"] == [
        (b"host", b"cp.example"),
        (b"x-a", b"one"),
        (b"x-b", b"two"),
        (b"content-length", b"10"),
    ]
    assert (await conn.response())[0].body == b"0123456789" and conn.inner is None


@pytest.mark.parametrize(
    ("header", "body", "expected"),
    [
        (b"Content-Length: 007", b"0123456", b"0123456"),  # leading zeros: the same number for both parsers
        (b"Content-Length: 0", b"", PATH),
        (b"Content-Length:  3 \t", b"abc", b"abc"),
    ],
    ids=["leading-zeros", "zero", "surrounding-whitespace"],
)
async def test_content_lengths_both_parsers_read_alike_are_served(connect, header, body, expected):
    conn = connect()
    conn.send(request(header, method=b"POST") + body + OTHER)
    (response,) = await conn.response()
    assert response.body == expected
    assert conn.inner is not None and conn.inner.received == OTHER  # the next request starts where llhttp said


async def test_tab_and_utf8_in_values_are_served_as_daphne_reads_them(connect):
    conn = connect()
    conn.send(request(b"X-Tab: a\tb", b"X-Utf8: caf\xc3\xa9"))
    (call,) = await conn.calls(1)
    assert call.scope["headers"][1:] == [(b"x-tab", b"a\tb"), (b"x-utf8", b"caf\xc3\xa9")]


async def test_connection_close_in_a_list_closes_after_the_response(connect):
    conn = connect()
    conn.send(request(b"Connection: keep-alive, close"))
    (response,) = await conn.response()
    assert response.get(b"connection") == [b"close"] and conn.closed

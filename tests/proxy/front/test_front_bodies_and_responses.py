"""The front's request bodies (pacing, pipelining) and response framing (chunked,
lengths, HEAD, no-body statuses, header splitting, message order) (harness: ``harness.py``)."""

from __future__ import annotations

import asyncio

import pytest

from streamspace.front.exchange import BODY_HIGH
from tests.proxy.front.harness import (
    PATH,
    Call,
    gated,
    request,
    settle,
    too_long_head,
    until,
)

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
    pipelined = too_long_head(blank_line=False)
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

"""The front's connection: keep-alive and close, application failures, the client going
away, the flow-control hooks and the idle timeout (harness: ``harness.py``)."""

from __future__ import annotations

import asyncio

import pytest

from streamspace.transport import flow
from tests.proxy.front.harness import (
    CLOSE_TIMEOUT,
    IDLE,
    OTHER,
    PATH,
    Call,
    gated,
    request,
    settle,
    until,
)

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


# -- flow control hooks used by streamspace.transport.flow --


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

"""The request-head deadline (``STREAMSPACE_PROXY_HEAD_TIMEOUT_S``): slow-header clients are closed.

Driven by the harness's clock: no test waits for the deadline in real time.
"""

from __future__ import annotations

import asyncio

import twisted.internet
from twisted.internet.task import Clock

from streamspace.front.protocol import HEAD_TIMEOUT_S, FrontFactory
from tests.proxy.front.harness import IDLE, OTHER, App, FakeServer, gated, request, settle

HEAD = 2.0


async def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(connect, clock):
    conn = connect(head_timeout=HEAD, timeout=IDLE)
    clock.advance(HEAD - 0.01)
    assert not conn.closed
    clock.advance(0.01)
    assert conn.transport.events == ["lose"]


async def test_a_dribbled_head_is_closed_at_the_deadline_however_steady(connect, clock):
    conn = connect(head_timeout=HEAD, timeout=IDLE)
    data = request()
    for i in range(19):  # a byte every 0.1 s: never idle, never done
        conn.send(data[i : i + 1])
        clock.advance(0.1)
    assert not conn.closed
    clock.advance(HEAD - 1.9)
    assert conn.transport.events == ["lose"] and conn.app.calls == [] and conn.inner is None


async def test_a_head_completed_in_time_is_served_and_the_deadline_is_gone(connect, clock):
    gate = asyncio.Event()
    conn = connect(gated(gate), head_timeout=HEAD, timeout=IDLE)
    data = request()
    conn.send(data[:10])
    clock.advance(HEAD - 0.5)
    conn.send(data[10:])
    await conn.calls(1)
    clock.advance(HEAD * 5)  # a slow application is not a slow head
    assert not conn.closed
    gate.set()
    assert (await conn.response())[0].status == 200


async def test_idle_time_between_requests_is_not_head_time(connect, clock):
    conn = connect(head_timeout=HEAD, timeout=IDLE)
    conn.send(request())
    await conn.response()
    clock.advance(IDLE - 1)  # idle on a kept-alive connection: the idle timeout's business
    assert not conn.closed
    conn.send(request()[:5])  # the next head starts: its deadline runs from here
    clock.advance(HEAD - 0.01)
    assert not conn.closed
    clock.advance(0.01)
    assert conn.transport.events == ["lose"] and len(conn.responses()) == 1


async def test_a_pipelined_head_waiting_for_the_response_in_flight_is_not_timed(connect, clock):
    gate = asyncio.Event()
    conn = connect(gated(gate), head_timeout=HEAD)
    conn.send(request() + request()[:5])  # the second head is incomplete and must wait
    await conn.calls(1)
    clock.advance(HEAD * 5)
    assert not conn.closed
    gate.set()
    await conn.response()
    await settle()
    clock.advance(HEAD)  # its deadline started when the front turned to it
    assert conn.transport.events == ["lose"]


async def test_a_head_handed_to_daphne_unfinished_is_still_timed(connect, clock):
    conn = connect(head_timeout=HEAD)
    conn.send(OTHER[:40])  # another path: daphne's from the request line on
    assert conn.inner is not None
    clock.advance(HEAD - 0.01)
    conn.send(OTHER[40:-3])  # all but the blank line's last bytes
    assert not conn.closed
    clock.advance(0.01)
    assert conn.transport.events == ["lose"] and conn.inner.received == OTHER[:-3]


async def test_a_head_handed_to_daphne_completes_in_time(connect, clock):
    conn = connect(head_timeout=HEAD)
    conn.send(OTHER[:40])
    conn.send(OTHER[40:-1])
    assert clock.getDelayedCalls() != []  # the deadline still runs ...
    conn.send(OTHER[-1:])  # ... until the head's end reaches daphne, split as it may be
    assert clock.getDelayedCalls() == []
    clock.advance(HEAD * 5)
    assert not conn.closed and conn.inner.received == OTHER


async def test_a_complete_head_handed_to_daphne_stops_the_deadline(connect, clock):
    conn = connect(head_timeout=HEAD)
    conn.send(request(b"Transfer-Encoding: chunked", method=b"POST"))
    assert conn.inner is not None and clock.getDelayedCalls() == []


async def test_a_lost_connection_cancels_the_deadline(connect, clock):
    conn = connect(head_timeout=HEAD)
    conn.send(request()[:5])
    conn.disconnect()
    assert clock.getDelayedCalls() == []


async def test_no_deadline_without_a_head_timeout(connect, clock):
    conn = connect(head_timeout=None)
    conn.send(request()[:5])
    assert clock.getDelayedCalls() == []


async def test_the_factory_takes_the_setting(settings, monkeypatch):
    monkeypatch.setattr(twisted.internet, "reactor", Clock(), raising=False)  # no global reactor needed
    assert settings.STREAMSPACE_PROXY_HEAD_TIMEOUT_S == HEAD_TIMEOUT_S == 10  # the documented default
    settings.STREAMSPACE_PROXY_HEAD_TIMEOUT_S = 3
    assert FrontFactory(FakeServer(App())).head_timeout == 3

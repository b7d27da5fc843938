"""Admission of agent hub handshakes (``STREAMSPACE_HUB_ADMISSION``, docs/architecture.md §13.2).

Driven by the harness's clock and its stand-in for daphne's protocol: a connection is "let
through" when daphne's protocol is built for it with its handshake's bytes. The slots are
given back as the hub's consumer gives them back (``admission.release_for`` with the
connection's ASGI ``send``, daphne's ``partial(handle_reply, protocol)``).
"""

from __future__ import annotations

import functools
import types

import pytest
import twisted.internet
from twisted.internet.task import Clock

from agent_runtime.protocol import CONNECT_PATH
from streamspace.front.protocol import FrontFactory
from streamspace.transport import admission
from streamspace.transport.admission import Admission
from tests.proxy.front.harness import OTHER, App, FakeServer, request

HOLD = 10.0
HEAD = 2.0
HANDSHAKE = request(
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    b"Sec-WebSocket-Version: 13",
    b"Authorization: Bearer agent-token",
    target=CONNECT_PATH.encode(),
)


@pytest.fixture
def hub(connect, clock):
    """``hub(limit)``: a function making connections that share one admission of ``limit``."""
    made = {}

    def make(limit: int):
        if "admission" not in made:
            made["admission"] = Admission(limit, HOLD, clock.callLater)

        def conn(**options):
            c = connect(head_timeout=HEAD, **options)
            c.factory.admission = made["admission"]
            return c

        return made["admission"], conn

    return make


def asgi_send(conn) -> functools.partial:
    """The ASGI ``send`` daphne gives the consumer of ``conn``'s WebSocket."""
    ws_protocol = types.SimpleNamespace(transport=conn.transport)
    return functools.partial(lambda protocol, message: None, ws_protocol)


def through(conn) -> bool:
    return conn.inner is not None


async def test_the_third_handshake_goes_on_only_after_a_registration(hub, clock):
    gate, conn = hub(2)
    first, second, third = conn(), conn(), conn()
    for c in (first, second, third):
        c.send(HANDSHAKE)
    assert through(first) and through(second) and not through(third)
    assert first.inner.received == HANDSHAKE and third.written == b""
    assert gate.in_flight == 2 and gate.waiting == 1

    admission.release_for(asgi_send(second))  # the hub sent `registered` on the second
    clock.advance(0)
    assert through(third) and third.inner.received == HANDSHAKE
    assert gate.in_flight == 2 and gate.waiting == 0


async def test_connections_wait_in_arrival_order(hub, clock):
    _, conn = hub(1)
    conns = [conn() for _ in range(4)]
    for c in conns:
        c.send(HANDSHAKE)
    for i in range(1, 4):
        assert [through(c) for c in conns] == [True] * i + [False] * (4 - i)
        admission.release_for(asgi_send(conns[i - 1]))
        clock.advance(0)
    assert all(through(c) for c in conns)


async def test_a_stalled_handshake_gives_its_slot_up_at_the_deadline(hub, clock):
    gate, conn = hub(1)
    stalled, waiting = conn(), conn()
    stalled.send(HANDSHAKE)  # let through, then never registers
    clock.advance(HOLD * 0.6)
    waiting.send(HANDSHAKE)  # would go on regardless at HOLD * 1.1 (its longest wait)
    clock.advance(HOLD * 0.4 - 0.01)
    assert not through(waiting)
    clock.advance(0.01)
    clock.advance(0)
    assert through(waiting) and gate.in_flight == 1
    admission.release_for(asgi_send(stalled))  # late: its slot is already given back
    assert gate.in_flight == 1


async def test_a_handshake_waits_at_most_half_the_deadline(hub, clock):
    gate, conn = hub(1)
    first, waiting, later = conn(), conn(), conn()
    first.send(HANDSHAKE)
    waiting.send(HANDSHAKE)
    clock.advance(HOLD / 4)
    later.send(HANDSHAKE)
    clock.advance(HOLD / 4 - 0.01)
    assert not through(waiting)
    clock.advance(0.01)  # its longest wait: it goes on above the limit ...
    assert through(waiting) and gate.in_flight == 2 and not through(later)
    admission.release_for(asgi_send(first))
    clock.advance(0)
    assert not through(later) and gate.in_flight == 1  # ... and counts against it
    admission.release_for(asgi_send(waiting))
    clock.advance(0)
    assert through(later) and gate.in_flight == 1 and gate.waiting == 0


async def test_a_waiting_handshake_is_not_closed_by_the_head_deadline(hub, clock):
    _, conn = hub(1)
    first, waiting = conn(), conn()
    first.send(HANDSHAKE)
    waiting.send(HANDSHAKE)
    clock.advance(HEAD * 3)  # its head is complete: waiting for a slot is not a slow head
    assert not waiting.closed


async def test_a_waiting_connection_that_leaves_gives_its_place_up(hub, clock):
    gate, conn = hub(1)
    first, leaving, third = conn(), conn(), conn()
    for c in (first, leaving, third):
        c.send(HANDSHAKE)
    leaving.disconnect()
    admission.release_for(asgi_send(first))
    clock.advance(0)
    assert not through(leaving) and through(third)
    assert gate.in_flight == 1 and gate.waiting == 0


async def test_a_connection_lost_before_its_upgrade_frees_its_slot(hub, clock):
    gate, conn = hub(1)
    first, second = conn(), conn()
    first.send(HANDSHAKE)
    second.send(HANDSHAKE)
    first.disconnect()  # daphne refused the upgrade and closed, or the agent left
    clock.advance(0)
    assert through(second) and first.inner.lost and gate.in_flight == 1


async def test_bytes_after_the_head_wait_with_it(hub, clock):
    _, conn = hub(1)
    first, second = conn(), conn()
    first.send(HANDSHAKE)
    second.send(HANDSHAKE[:30], HANDSHAKE[30:] + b"\x81\x05early")
    admission.release_for(asgi_send(first))
    clock.advance(0)
    assert second.inner.received == HANDSHAKE + b"\x81\x05early"


async def test_other_requests_never_wait(hub, clock):
    gate, conn = hub(1)
    first, waiting = conn(), conn()
    first.send(HANDSHAKE)
    waiting.send(HANDSHAKE)
    served = conn()
    served.send(request())  # a proxy request: served by the front meanwhile
    assert (await served.response())[0].status == 200
    portal = conn()
    portal.send(OTHER)  # the portal and API: daphne's at once
    assert portal.inner.received == OTHER
    plain = conn()
    plain_get = request(target=CONNECT_PATH.encode())  # the hub's path without an agent's upgrade
    plain.send(plain_get)
    assert plain.inner.received == plain_get
    assert gate.in_flight == 1 and gate.waiting == 1 and not through(waiting)


async def test_a_similar_path_is_not_the_hub(hub, clock):
    gate, conn = hub(1)
    first, other = conn(), conn()
    first.send(HANDSHAKE)
    other_handshake = HANDSHAKE.replace(CONNECT_PATH.encode(), CONNECT_PATH.encode() + b"ed", 1)
    other.send(other_handshake)
    assert other.inner.received == other_handshake and gate.waiting == 0


def test_release_is_idempotent_and_the_limit_is_kept():
    calls = []
    gate = Admission(2, 0, lambda delay, func, *args: calls.append((func, args)))
    started = []
    tickets = [gate.enter(object(), started.append) for _ in range(4)]
    assert started == tickets[:2] and gate.in_flight == 2
    tickets[0].release()
    tickets[0].release()
    assert gate.in_flight == 2 and [args for _, args in calls] == [(tickets[2],)]
    with pytest.raises(ValueError):
        Admission(0, 0, lambda *a: None)


def test_release_for_another_server_is_a_no_op():
    admission.release_for(lambda message: None)  # not daphne's send: nothing to find
    admission.release_for(None)


async def test_the_factory_takes_the_setting(settings, monkeypatch):
    monkeypatch.setattr(twisted.internet, "reactor", Clock(), raising=False)  # no global reactor needed
    assert settings.STREAMSPACE_HUB_ADMISSION == 500  # the documented default
    server = FakeServer(App())
    server.websocket_connect_timeout = 7
    factory = FrontFactory(server)
    assert factory.admission.limit == 500 and factory.admission.hold_s == 7
    settings.STREAMSPACE_HUB_ADMISSION = 0
    assert FrontFactory(server).admission is None


async def test_waiting_handshakes_go_on_together_at_the_low_water_mark(hub, clock):
    gate, conn = hub(4)
    conns = [conn() for _ in range(8)]
    for c in conns:
        c.send(HANDSHAKE)
    assert [through(c) for c in conns] == [True] * 4 + [False] * 4
    admission.release_for(asgi_send(conns[0]))
    clock.advance(0)
    assert gate.in_flight == 3 and gate.waiting == 4  # above the low-water mark (2): nobody yet
    admission.release_for(asgi_send(conns[1]))
    clock.advance(0)
    assert [through(c) for c in conns] == [True] * 6 + [False] * 2  # two go on together, up to the limit
    assert gate.in_flight == 4 and gate.waiting == 2

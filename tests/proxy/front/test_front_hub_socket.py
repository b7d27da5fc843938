"""Agent hub handshakes given to the factory's hub socket (``agents_app.hub_socket``,
docs/architecture.md §7.1) rather than to daphne, once admitted (§13.2) or at once without an
admission; the hub socket frees its admission slot through its own ASGI ``send``.

Driven by the harness: a recording stand-in takes the place of the hub socket class, so
these tests check the front's routing; ``tests/hub/test_hub_socket.py`` checks the real one
on a real replica.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent_runtime.protocol import CONNECT_PATH
from agents_app.hub_socket import HubSocket
from streamspace.transport import admission
from streamspace.transport.admission import Admission
from tests.proxy.front.test_front_hub_admission import HANDSHAKE, HOLD

HEAD = 2.0


class RecordingHubSocket:
    """Stands in for ``HubSocket``: records what the front gave it."""

    built: list[RecordingHubSocket] = []

    def __init__(self, front: Any, head: Any) -> None:
        self.front, self.head, self.body_left = front, head, 0
        self.admission_key = front.transport  # as HubSocket: what its ``send`` frees
        self.started = False
        RecordingHubSocket.built.append(self)

    def start(self) -> None:
        self.started = True

    def feed(self, data: bytes) -> bytes:
        return data

    def disconnected(self) -> None: ...

    async def send(self, message: dict) -> None: ...


@pytest.fixture
def hub_conn(connect, clock):
    """``hub_conn(limit, hub_socket)``: connections sharing one admission of ``limit`` (0: none)."""
    RecordingHubSocket.built = []
    made: dict[str, Admission] = {}

    def make(limit: int, hub_socket: type = RecordingHubSocket):
        if limit and "admission" not in made:
            made["admission"] = Admission(limit, HOLD, clock.callLater)

        def conn():
            c = connect(head_timeout=HEAD)
            c.factory.admission = made.get("admission")
            c.factory.hub_socket = hub_socket
            return c

        return made.get("admission"), conn

    return make


@pytest.mark.parametrize("limit", [2, 0], ids=["admission", "no-admission"])
async def test_a_hub_handshake_goes_to_the_hub_socket_with_daphnes_websocket_scope(hub_conn, limit):
    _, conn = hub_conn(limit)
    c = conn()
    c.send(HANDSHAKE)
    assert c.inner is None  # daphne never saw it
    (socket,) = RecordingHubSocket.built
    assert socket.started and c.protocol.handler is socket
    scope = socket.head.scope
    assert scope["type"] == "websocket" and scope["path"] == CONNECT_PATH and scope["scheme"] == "ws"
    assert (b"authorization", b"Bearer agent-token") in scope["headers"]
    assert socket.head.raw == HANDSHAKE


async def test_the_hub_sockets_send_frees_its_admission_slot(hub_conn, clock):
    gate, conn = hub_conn(1)
    first, second = conn(), conn()
    first.send(HANDSHAKE)
    second.send(HANDSHAKE)
    assert len(RecordingHubSocket.built) == 1 and gate.waiting == 1
    admission.release_for(RecordingHubSocket.built[0].send)  # the consumer's ``base_send``
    clock.advance(0)
    assert len(RecordingHubSocket.built) == 2 and gate.in_flight == 1 and gate.waiting == 0


async def test_a_handshake_without_a_token_is_daphnes(hub_conn):
    _, conn = hub_conn(0)
    c = conn()
    head = HANDSHAKE.replace(b"Authorization: Bearer agent-token\r\n", b"")
    c.send(head)
    assert c.inner is not None and c.inner.received == head and not RecordingHubSocket.built


@pytest.mark.parametrize(
    "change",
    [
        (b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Key: not-base64-16"),
        (b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"),
        (b"", b""),  # well-formed, but the harness's socket cannot leave Twisted
    ],
    ids=["bad-key", "old-version", "not-detachable"],
)
async def test_the_hub_socket_gives_what_it_cannot_take_to_daphne_unchanged(hub_conn, change):
    _, conn = hub_conn(0, HubSocket)
    c = conn()
    head = HANDSHAKE.replace(*change)
    c.send(head)
    assert c.inner is not None and c.inner.received == head

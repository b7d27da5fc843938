"""The front's four handler kinds against the one contract (``streamspace/front/handlers.py``).

``AgentSocket`` and ``HubSocket`` live in ``agents_app``, below the front, and never import
it: nothing but this test ties them to :class:`FrontHandler`, so the test checks what a type checker
would (every member present, the methods' parameters as the contract declares them, the
constructor the connection calls) on real instances.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from agents_app.agent_socket import AgentSocket
from agents_app.hub_socket import HubSocket
from streamspace.front.exchange import Exchange
from streamspace.front.handlers import FrontConnection, FrontHandler, RequestHead
from streamspace.front.pipe import WebSocketPipe
from tests.proxy.front.harness import Transport

HANDLERS = [Exchange, WebSocketPipe, AgentSocket, HubSocket]
METHODS = ["start", "feed", "disconnected"]


class StubFront:
    """What a handler may be given as its connection (nothing is called while building one)."""

    transport = Transport()
    server: Any = None
    factory: Any = None
    lost = False
    paused = False
    handler = None

    def request_done(self, handler: FrontHandler, *, keep_alive: bool) -> None: ...

    def hand_over(self, prefix: bytes = b"") -> None: ...

    def become(self, owner: FrontHandler) -> bytes:
        return b""

    def abort(self) -> None: ...


def head_for(handler: type) -> RequestHead:
    websocket = handler is not Exchange
    scope = {"type": "websocket" if websocket else "http", "path": "/p", "headers": [], "client": ["192.0.2.1", 1]}
    return RequestHead(b"GET", b"/p", scope, 0 if websocket else 3, False, b"GET /p HTTP/1.1\r\n\r\n", handler)


def _parameters(function: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("handler", HANDLERS, ids=lambda cls: cls.__name__)
def test_each_handler_satisfies_the_front_handler_protocol(handler):
    head = head_for(handler)
    built = head.handler(StubFront(), head)  # how the connection builds one
    assert isinstance(built, FrontHandler)
    assert isinstance(built.body_left, int) and built.body_left == head.body_length
    for name in METHODS:
        assert _parameters(getattr(handler, name)) == _parameters(getattr(FrontHandler, name)), name
    assert [name for name, _, _ in _parameters(handler.__init__)] == ["self", "front", "head"]


@pytest.mark.parametrize("handler", [WebSocketPipe, AgentSocket, HubSocket], ids=lambda cls: cls.__name__)
def test_a_handshake_has_no_body_so_feed_leaves_every_byte(handler):
    head = head_for(handler)
    built = handler(StubFront(), head)
    assert built.body_left == 0 and built.feed(b"frame bytes") == b"frame bytes"


async def test_the_front_protocol_provides_the_connection_side(connect):
    protocol = connect().protocol
    methods = sorted(name for name, value in vars(FrontConnection).items() if callable(value) and name[0] != "_")
    assert methods == ["abort", "become", "hand_over", "request_done"]
    for name in methods:
        assert _parameters(getattr(type(protocol), name)) == _parameters(getattr(FrontConnection, name)), name
    attributes = set(FrontConnection.__annotations__)
    assert attributes == {"transport", "server", "factory", "lost", "paused", "handler"}
    assert all(hasattr(protocol, name) for name in attributes)


def test_a_class_missing_a_member_does_not_satisfy_the_protocol():
    class NoFeed:
        body_left = 0

        def start(self) -> None: ...

        def disconnected(self) -> None: ...

    assert not isinstance(NoFeed(), FrontHandler)

"""The agent hub's WebSocket served by the front under the launcher (``agents_app/hub_socket.py``,
docs/architecture.md §7.1): the handshake is answered by the front, not by daphne's autobahn,
and the same consumer behind it registers the agent, gets messages split over several frames
whole, answers pings, closes an oversized message with 1009 (one far over the limit as soon as
its header is read), refuses a bad token with 403 before any upgrade, pings a silent agent and
drops it when it does not answer (daphne's ``--ping-interval``/``--ping-timeout``) and marks
the instance disconnected when the agent goes. With and without the hub admission
(``STREAMSPACE_HUB_ADMISSION``). Real replica, PostgreSQL and Redis; the
agent speaks RFC 6455 by hand (``tests/support/raw_websocket.py``) to break it on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from channels.db import database_sync_to_async

from agent_runtime.protocol import CONNECT_PATH, MAX_FRAME_BYTES
from agents_app.hub_socket import MAX_MESSAGE
from agents_app.models import Agent, AgentInstance
from agents_app.tokens import hash_token
from tests.support.agent_client import frame, register_payload
from tests.support.processes import running_replica
from tests.support.raw_websocket import BINARY, BOUND, CLOSE, CONT, FRONT_101, PING, PONG, TEXT, RawAgent, close_code
from tests.support.waits import until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture(params=["500", "0"], ids=["admission", "no-admission"])
def replica(request):
    with running_replica("hub-socket-replica", STREAMSPACE_HUB_ADMISSION=request.param) as port:
        yield f"ws://127.0.0.1:{port}{CONNECT_PATH}"


def _make_agent() -> None:
    Agent.objects.create(agent_id="hs-1", platform="docker", token_hash=hash_token("hs-token-1"))


def _register_frame() -> bytes:
    return frame("register", **register_payload(Agent(agent_id="hs-1", platform="docker"), "hs-1-0")).encode()


def _connected() -> bool:
    return AgentInstance.objects.filter(instance_id="hs-1-0", connected=True).exists()


async def _is_connected(expected: bool) -> bool:
    return await database_sync_to_async(_connected)() is expected


async def _recv_json(agent: RawAgent) -> dict:
    opcode, payload = await agent.recv()
    assert opcode == TEXT, (opcode, payload)
    return json.loads(payload)


@contextlib.asynccontextmanager
async def _registered(url: str) -> AsyncIterator[RawAgent]:
    """An agent (``hs-1``) dialled to ``url`` and registered; its socket closed at the end."""
    await database_sync_to_async(_make_agent)()
    agent = await RawAgent.dial(url, "hs-token-1")
    try:
        agent.send(TEXT, _register_frame())
        assert (await _recv_json(agent))["type"] == "registered"
        yield agent
    finally:
        agent.close()


async def test_the_front_serves_the_hub_socket_from_handshake_to_disconnect(replica):
    await database_sync_to_async(_make_agent)()
    agent = await RawAgent.dial(replica, "hs-token-1")
    try:
        assert agent.head.startswith(FRONT_101), agent.head  # the front's 101, not autobahn's
        # ``register`` split over three frames arrives whole.
        hello = _register_frame()
        agent.send(TEXT, hello[:10], fin=False)
        agent.send(CONT, hello[10:40], fin=False)
        agent.send(CONT, hello[40:])
        reply = await _recv_json(agent)
        assert reply["type"] == "registered", reply
        assert await until(lambda: _is_connected(True), what="the instance row connected")
        # A ping is answered; the socket stays usable.
        agent.send(PING, b"are you there")
        assert await agent.recv() == (PONG, b"are you there")
        # A message over the hub's limit closes the socket with 1009.
        agent.send(TEXT, b"x" * (MAX_FRAME_BYTES + 1))
        frames = await agent.until_eof()
        assert [(opcode, close_code(payload)) for opcode, payload in frames if opcode == CLOSE] == [(CLOSE, 1009)]
        assert await until(lambda: _is_connected(False), what="the instance row disconnected")
    finally:
        agent.close()


async def test_a_clean_close_from_the_agent_ends_the_consumer(replica):
    async with _registered(replica) as agent:
        agent.send(CLOSE, (1000).to_bytes(2, "big"))
        frames = await agent.until_eof()
        assert frames and frames[-1][0] == CLOSE and close_code(frames[-1][1]) == 1000, frames
        assert await until(lambda: _is_connected(False), what="the instance row disconnected")


async def test_a_wrong_token_is_refused_before_the_upgrade(replica):
    await database_sync_to_async(_make_agent)()
    agent = await RawAgent.dial(replica, "not-a-token")
    try:
        assert agent.status == 403, agent.head
        assert await asyncio.wait_for(agent.reader.read(), BOUND) == b"Access denied"
    finally:
        agent.close()


@pytest.fixture
def quick_ping_replica():
    with running_replica("hub-socket-ping", "--ping-interval", "1", "--ping-timeout", "1") as port:
        yield f"ws://127.0.0.1:{port}{CONNECT_PATH}"


async def test_a_silent_agent_is_pinged_and_dropped_when_it_does_not_answer(quick_ping_replica):
    async with _registered(quick_ping_replica) as agent:
        # Silent for --ping-interval: pinged; the ping unanswered for --ping-timeout: dropped.
        frames = await agent.until_eof()
        assert [opcode for opcode, _ in frames] == [PING], frames
        assert await until(lambda: _is_connected(False), what="the instance row disconnected")


async def test_a_message_far_over_the_limit_fails_the_socket_before_it_is_read(replica):
    async with _registered(replica) as agent:
        # Only the header of a frame announcing more than the socket buffers is sent.
        agent.send(BINARY, b"", length=MAX_MESSAGE + 1)
        frames = await agent.until_eof()
        assert [(opcode, close_code(payload)) for opcode, payload in frames] == [(CLOSE, 1009)]
        assert await until(lambda: _is_connected(False), what="the instance row disconnected")

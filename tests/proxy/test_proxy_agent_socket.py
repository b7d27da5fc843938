"""The agent's tunnel socket under the launcher (``agents_app/agent_socket.py``), end
to end, against agents that misbehave: the front answers the handshake of a pending tunnel
itself and parses the agent's frames with websockets' sans-I/O protocol; everything it does
not take (a claimed stream, a wrong token) is daphne's ``tunnel_endpoint``'s to refuse.

The agents here are scripts run for each ``tunnel_open`` the hub sends (:class:`Leader`);
most speak RFC 6455 by hand over a raw socket (:class:`RawAgent`) so that they can break it.
One daphne for the module, with a short tunnel timeout (a tunnel no agent connects is a
502 in 3 s) and a long read timeout (a tunnel the control plane failed to end would keep
the browser waiting 30 s, well past every bound here).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from agent_runtime.tunnel import run_tunnel
from agents_app.dispatch import TUNNEL_MESSAGE_TYPE
from agents_app.models import Agent
from agents_app.tokens import hash_token
from tests.proxy.conftest import (
    AGENT_TOKEN,
    EndpointBackend,
    bearer,
    close_old_connections_in_thread,
    connected_leader,
    make_session,
)
from tests.support.processes import start_daphne, stop
from tests.support.raw_websocket import (
    BINARY,
    BOUND,
    CLOSE,
    CONT,
    FRONT_101,
    PING,
    PONG,
    TEXT,
    RawAgent,
    accept_for,
    canned,
    close_code,
    frame,
    read_to_end,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
RawAgent.default_token = AGENT_TOKEN

TUNNEL_TIMEOUT_S = 3
MIB = 1024 * 1024


# -- a leader that runs the test's scripts --

Script = Callable[[dict], Awaitable[Any]]


class Leader:
    """The agent's connected leader: each ``tunnel_open`` runs the next planned script
    (well-behaved ``run_tunnel`` once the plan is used up); ``tunnel()`` awaits the next run."""

    def __init__(self, upstream_port: int) -> None:
        self.plan: collections.deque[Script] = collections.deque()
        self.opened: list[dict] = []
        self.runs: asyncio.Queue[asyncio.Task] = asyncio.Queue()
        self.tasks: list[asyncio.Task] = []
        self.backend = EndpointBackend(f"127.0.0.1:{upstream_port}")

    async def well_behaved(self, payload: dict) -> None:
        await run_tunnel(payload, token=AGENT_TOKEN, backend=self.backend)

    def on_tunnel(self, payload: dict) -> None:
        self.opened.append(payload)
        script = self.plan.popleft() if self.plan else self.well_behaved
        task = asyncio.ensure_future(script(payload))
        self.tasks.append(task)
        self.runs.put_nowait(task)

    async def tunnel(self) -> Any:
        """What the next tunnel's script returned (it must be asked for and end within the bound)."""
        task = await asyncio.wait_for(self.runs.get(), BOUND)
        return await asyncio.wait_for(task, BOUND)


async def script_during_a_request(script: Any, launcher: Any, leader: Any, session: Any, user: Any) -> Any:
    """Run ``script`` as the next tunnel's agent while a browser's request waits for it; its result."""
    leader.plan.append(script)
    async with browser(launcher, session, user) as client:
        request = asyncio.ensure_future(client.get("/small"))
        try:
            return await leader.tunnel()
        finally:
            request.cancel()


@pytest.fixture
async def leader(docker_agent, upstream_port):
    layer = get_channel_layer()
    channel = await connected_leader(docker_agent)
    state = Leader(upstream_port)

    async def listen() -> None:
        while True:
            message = await layer.receive(channel)
            if message["type"] == TUNNEL_MESSAGE_TYPE:
                state.on_tunnel(message["payload"])

    listener = asyncio.ensure_future(listen())
    yield state
    listener.cancel()
    for task in state.tasks:
        task.cancel()
    await asyncio.gather(listener, *state.tasks, return_exceptions=True)
    while RawAgent.live:
        RawAgent.live.pop().close()
    await sync_to_async(close_old_connections_in_thread)()


@pytest.fixture(scope="module")
def launcher(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        server = start_daphne(
            {"STREAMSPACE_PROXY_TUNNEL_TIMEOUT_S": str(TUNNEL_TIMEOUT_S), "STREAMSPACE_PROXY_READ_TIMEOUT_S": "30"}
        )
    yield server
    stop(server.process)


@pytest.fixture
def tunnelled(alice, template, docker_agent):
    docker_agent.proxy_mode = "tunnel"
    docker_agent.save(update_fields=["proxy_mode"])
    return make_session(alice, template, docker_agent, endpoint="")


@pytest.fixture
def direct(alice, template, upstream_port):
    other = Agent.objects.create(
        agent_id="direct-1", platform="docker", token_hash=hash_token("direct-1-token"), proxy_mode="direct"
    )
    return make_session(alice, template, other, endpoint=f"127.0.0.1:{upstream_port}")


def browser(launcher, session, user) -> httpx.AsyncClient:
    """A client of the session on the portal's prefix (an API client: the prefix takes no cookie)."""
    return httpx.AsyncClient(
        base_url=f"{launcher.base}/api/v1/http/{session.pk}", headers={"Authorization": bearer(user)}, timeout=BOUND
    )


async def raw_get(launcher, session, user, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client's connection with a GET sent (``connection: close``): the test reads the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", launcher.port)
    writer.write(
        f"GET /api/v1/http/{session.pk}{path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: {bearer(user)}\r\n"
        "connection: close\r\n\r\n".encode()
    )
    return reader, writer


async def still_serving(launcher, leader: Leader, tunnelled, direct, alice) -> None:
    """A fresh tunnel with a well-behaved agent carries a request, and so does a direct route."""
    opened = len(leader.opened)
    async with browser(launcher, tunnelled, alice) as client:
        reply = await client.get("/small")
    assert (reply.status_code, reply.content) == (200, b"hello, world\n")
    assert len(leader.opened) == opened + 1
    async with browser(launcher, direct, alice) as client:
        reply = await client.get("/small")
    assert (reply.status_code, reply.content) == (200, b"hello, world\n")


# -- 1. the front, not daphne, answers the agent --


async def test_the_front_takes_the_agent_socket_and_carries_requests(launcher, leader, tunnelled, alice, upstream_port):
    async def script(payload: dict) -> tuple[bytes, bytes]:
        agent = await RawAgent.dial(payload["url"])
        leader.tasks.append(asyncio.ensure_future(agent.relay("127.0.0.1", upstream_port)))
        return agent.head, agent.key

    leader.plan.append(script)
    async with browser(launcher, tunnelled, alice) as client:
        reply = await client.get("/small")
        head, key = await leader.tunnel()
        assert (reply.status_code, reply.content) == (200, b"hello, world\n")
        # Byte for byte what agent_socket.py writes; autobahn's would say "Upgrade: WebSocket".
        assert head == FRONT_101 + b"sec-websocket-accept: " + accept_for(key) + b"\r\n\r\n"
        assert b"Upgrade: WebSocket" not in head
        # Keep-alive through the same hand-framed tunnel.
        for _ in range(3):
            assert (await client.get("/small")).content == b"hello, world\n"
    assert len(leader.opened) == 1


# -- 2. one socket per stream --


async def test_a_second_socket_for_a_claimed_stream_is_refused(launcher, leader, tunnelled, alice, upstream_port):
    async def script(payload: dict) -> bytes:
        first = await RawAgent.dial(payload["url"])
        assert first.status == 101
        second = await RawAgent.dial(payload["url"])
        rest = await asyncio.wait_for(second.reader.read(), BOUND)  # daphne closes after refusing
        leader.tasks.append(asyncio.ensure_future(first.relay("127.0.0.1", upstream_port)))
        return second.head + rest

    leader.plan.append(script)
    async with browser(launcher, tunnelled, alice) as client:
        reply = await client.get("/small")
        refused = await leader.tunnel()
        assert refused.startswith(b"HTTP/1.1 403")
        assert FRONT_101 not in refused
        assert (reply.status_code, reply.content) == (200, b"hello, world\n")
        for _ in range(3):
            assert (await client.get("/small")).content == b"hello, world\n"
    assert len(leader.opened) == 1


# -- 3. tokens --


@pytest.mark.parametrize("token", ["not-a-token", "direct-1-token"], ids=["unknown", "another-agents"])
async def test_a_wrong_token_is_refused_and_the_browser_gets_502(launcher, leader, tunnelled, direct, alice, token):
    """``direct-1-token`` is valid, for another agent (the ``direct`` fixture's): not this tunnel's."""

    async def script(payload: dict) -> bytes:
        # Pipelined behind the handshake, as if the socket had been accepted.
        agent = await RawAgent.dial(payload["url"], token, pipelined=frame(BINARY, canned(b"forged")))
        return agent.head + await asyncio.wait_for(agent.reader.read(), BOUND)

    leader.plan.append(script)
    async with browser(launcher, tunnelled, alice) as client:
        reply = await client.get("/small")
    refused = await leader.tunnel()
    assert refused.startswith(b"HTTP/1.1 403") and FRONT_101 not in refused
    assert b"GET /small" not in refused  # the browser's request never went to that socket
    assert reply.status_code == 502 and b"forged" not in reply.content
    assert len(leader.opened) == 1


async def test_a_refused_token_does_not_use_up_the_stream(launcher, leader, tunnelled, alice, upstream_port):
    async def script(payload: dict) -> int:
        wrong = await RawAgent.dial(payload["url"], "not-a-token")
        wrong.close()
        right = await RawAgent.dial(payload["url"])
        leader.tasks.append(asyncio.ensure_future(right.relay("127.0.0.1", upstream_port)))
        return wrong.status * 1000 + right.status

    leader.plan.append(script)
    async with browser(launcher, tunnelled, alice) as client:
        reply = await client.get("/small")
    assert await leader.tunnel() == 403_101
    assert (reply.status_code, reply.content) == (200, b"hello, world\n")


# -- 4. protocol violations after the 101 --

VIOLATIONS = {
    # name: (bytes the agent sends, close codes it may be sent back)
    "unmasked": (frame(BINARY, canned(b"unmasked", content_length="8"), mask=False), {1002}),
    "text": (frame(TEXT, canned(b"text", content_length="4")), {1002, 1003}),
    "fragmented-text": (
        frame(TEXT, b"HTTP/1.1 ", fin=False) + frame(CONT, canned(b"tail", content_length="4")),
        {1002, 1003},
    ),
    "too-large": (frame(BINARY, length=32 * MIB), {1009}),  # the header only, claiming 32 MiB
    "garbage": (b"this is not a websocket frame\r\n" * 4, {1002}),
}


@pytest.mark.parametrize(
    "violation",
    [name for name in VIOLATIONS],
)
async def test_a_protocol_violation_ends_the_tunnel(launcher, leader, tunnelled, direct, alice, violation):
    data, codes = VIOLATIONS[violation]

    async def script(payload: dict) -> list[tuple[int, bytes]]:
        agent = await RawAgent.dial(payload["url"])
        await agent.read_request()
        agent.writer.write(data)
        return await agent.until_eof()

    leader.plan.append(script)
    async with browser(launcher, tunnelled, alice) as client:
        reply = await client.get("/small", timeout=5)  # a healthy 502 takes milliseconds
        # Not the read timeout's 504, nor a response made of what the agent sent: the tunnel ended.
        assert reply.status_code == 502
        frames = await leader.tunnel()
    assert frames and frames[-1][0] == CLOSE and close_code(frames[-1][1]) in codes, frames
    assert all(opcode == CLOSE for opcode, _ in frames)
    await still_serving(launcher, leader, tunnelled, direct, alice)


async def test_a_violation_sent_with_the_handshake_ends_the_tunnel(launcher, leader, tunnelled, alice):
    """The same garbage, written behind the handshake instead of after the request (unmasked and too-large
    frames behave alike)."""

    async def script(payload: dict) -> list[tuple[int, bytes]]:
        agent = await RawAgent.dial(payload["url"], pipelined=VIOLATIONS["garbage"][0])
        assert agent.status == 101
        return await agent.until_eof()

    leader.plan.append(script)
    async with browser(launcher, tunnelled, alice) as client:
        request = asyncio.ensure_future(client.get("/small", timeout=5))  # a healthy 502 takes milliseconds
        frames = await leader.tunnel()
        assert frames == [(CLOSE, struct.pack("!H", 1002) + b"invalid opcode")]
        reply = await request
    assert reply.status_code == 502


# -- 5. pings --


async def test_pings_are_answered_with_their_payload(launcher, leader, tunnelled, alice):
    payloads = [b"", bytes(range(125)), b"are you there?"]

    async def script(payload: dict) -> list[bytes]:
        agent = await RawAgent.dial(payload["url"])
        for data in payloads:
            agent.send(PING, data)
        pongs = []
        while len(pongs) < len(payloads):
            opcode, data = await agent.recv()
            if opcode == PONG:
                pongs.append(data)
            else:
                assert opcode == BINARY
                agent.payload += data
        await agent.read_request()
        agent.send(BINARY, canned(b"pong seen", content_length="9"))
        leader.tasks.append(asyncio.ensure_future(agent.until_eof()))
        return pongs

    leader.plan.append(script)
    async with browser(launcher, tunnelled, alice) as client:
        reply = await client.get("/small")
        assert await leader.tunnel() == payloads
    # The pings' payloads did not leak into the byte stream ahead of the response.
    assert (reply.status_code, reply.content) == (200, b"pong seen")


async def test_frames_pipelined_behind_the_handshake_are_taken_in_order(launcher, leader, tunnelled, alice):
    """An agent that does not wait for the 101: more than the front buffers (some stays in the kernel).

    Every ping is answered, in order. The tunnel's own data (the proxied request, a binary
    frame) may go out between two pongs: it is on the same socket, and the test ignores it.
    """
    count = 30_000  # 420 KB of pings; the front reads at most ~128 KiB before it pauses
    pings = b"".join(frame(PING, b"%08d" % number) for number in range(count))

    async def read_frames(reader: asyncio.StreamReader) -> tuple[list[bytes], set[int]]:
        pongs, others = [], set()
        while len(pongs) < count:
            first, second = await reader.readexactly(2)
            size = second & 0x7F
            if size >= 126:
                size = int.from_bytes(await reader.readexactly(2 if size == 126 else 8), "big")
            payload = await reader.readexactly(size)
            if first == 0x8A:
                pongs.append(payload)
            else:
                others.add(first)
        return pongs, others

    async def script(payload: dict) -> tuple[bytes, list[bytes], set[int], bytes]:
        agent = await RawAgent.dial(payload["url"], pipelined=pings, read_head=False)
        head_size = len(FRONT_101) + len(b"sec-websocket-accept: \r\n\r\n") + 28
        head = await asyncio.wait_for(agent.reader.readexactly(head_size), BOUND)
        pongs, others = await asyncio.wait_for(read_frames(agent.reader), BOUND)
        return head, pongs, others, agent.key

    head, pongs, others, key = await script_during_a_request(script, launcher, leader, tunnelled, alice)
    assert head == FRONT_101 + b"sec-websocket-accept: " + accept_for(key) + b"\r\n\r\n", head[:80]
    assert pongs == [b"%08d" % number for number in range(count)]
    assert others <= {0x82}  # nothing but the tunnel's binary data besides the pongs


async def test_a_ping_flood_from_an_agent_that_does_not_read_is_bounded(launcher, leader, tunnelled, alice):
    burst = frame(PING, b"p" * 125) * 8192  # 1 MiB of pings

    async def script(payload: dict) -> tuple[int, int]:
        agent = await RawAgent.dial(payload["url"])
        before, sent = launcher.rss_kib(), 0
        while sent < 40 * MIB:
            agent.writer.write(burst)
            try:
                await asyncio.wait_for(agent.writer.drain(), 2.0)  # a stall: the control plane stopped reading
            except TimeoutError:
                break
            sent += len(burst)
        return sent, launcher.rss_kib() - before

    sent, growth_kib = await script_during_a_request(script, launcher, leader, tunnelled, alice)
    # The pongs it owes an agent that does not read are bounded, not the pings it sent.
    assert growth_kib < 16 * 1024, f"{sent / MIB:.0f} MiB of pings grew the control plane by {growth_kib // 1024} MiB"


# -- 6. the agent hangs up mid-response --


@pytest.mark.parametrize("how", ["close-frame", "fin", "reset"])
async def test_the_agent_hanging_up_mid_response_ends_the_browsers_response(launcher, leader, tunnelled, alice, how):
    async def script(payload: dict) -> list[tuple[int, bytes]]:
        agent = await RawAgent.dial(payload["url"])
        await agent.read_request()
        agent.send(BINARY, canned(b"x" * 1000, content_length=str(MIB)))
        await agent.writer.drain()
        await arrived.wait()
        if how == "close-frame":
            agent.send(CLOSE, struct.pack("!H", 1000))
            return await agent.until_eof()
        if how == "reset":
            agent.writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        agent.close()
        return []

    arrived = asyncio.Event()
    leader.plan.append(script)
    reader, writer = await raw_get(launcher, tunnelled, alice, "/big")
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
        assert head.startswith(b"HTTP/1.1 200") and f"content-length: {MIB}".encode() in head.lower()
        body = await asyncio.wait_for(reader.readexactly(1000), BOUND)
        arrived.set()
        rest = await asyncio.wait_for(read_to_end(reader), BOUND)  # the response ends: no hang
    finally:
        writer.close()
    assert body + rest == b"x" * 1000  # cut short (dropped): 1000 bytes of the MiB announced
    frames = await leader.tunnel()
    if how == "close-frame":  # the close is answered, then the connection ends
        assert frames == [(CLOSE, struct.pack("!H", 1000))]


# -- 7. the browser's side goes away --


@pytest.mark.parametrize("how", ["browser-leaves", "connection-close"])
async def test_the_proxy_closing_its_end_closes_the_agent_socket(launcher, leader, tunnelled, alice, how):
    async def script(payload: dict) -> list[tuple[int, bytes]]:
        agent = await RawAgent.dial(payload["url"])
        await agent.read_request()
        if how == "browser-leaves":
            agent.send(BINARY, canned(b"x" * 1000, content_length=str(MIB)))
        else:  # a complete response, after which the session will not keep the connection
            agent.send(BINARY, canned(b"bye", content_length="3", connection="close"))
        return await agent.until_eof()

    leader.plan.append(script)
    reader, writer = await raw_get(launcher, tunnelled, alice, "/anything")
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
        assert head.startswith(b"HTTP/1.1 200")
        if how == "browser-leaves":
            await asyncio.wait_for(reader.readexactly(1000), BOUND)
        else:
            assert await asyncio.wait_for(reader.read(), BOUND) == b"bye"
    finally:
        writer.close()
    # A close frame (going away normally), then the end of the connection.
    assert await leader.tunnel() == [(CLOSE, struct.pack("!H", 1000))]

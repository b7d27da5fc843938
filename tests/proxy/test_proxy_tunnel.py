"""Tunnelled sessions end to end: daphne asks the agent (through the hub's channel-layer
message) to open a tunnel, ``agent_runtime.tunnel.run_tunnel`` runs here as the agent
would, dials the session port and connects back to daphne's tunnel endpoint; the proxy
then speaks HTTP and WebSocket over it."""

from __future__ import annotations

import asyncio
import hashlib
import os

import httpx
import pytest
from asgiref.sync import sync_to_async
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.proxy.conftest import AGENT_TOKEN, bearer, make_session
from tests.support.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

MIB = 1024 * 1024


@pytest.fixture
def tunnelled(alice, template, docker_agent):
    docker_agent.proxy_mode = "tunnel"
    docker_agent.save(update_fields=["proxy_mode"])
    return make_session(alice, template, docker_agent, endpoint="")


def credentials(session, user) -> dict[str, str]:
    """An API client's header: the portal's prefix takes no cookie."""
    return {"Authorization": bearer(user)}


async def test_http_through_the_tunnel(daphne, agent, tunnelled, alice):
    base = f"{daphne.base}/api/v1/http/{tunnelled.pk}"
    async with httpx.AsyncClient(timeout=30, headers=credentials(tunnelled, alice)) as client:
        page = await client.get(f"{base}/")
        assert page.status_code == 200 and b"session page" in page.content
        assert agent["opened"][0]["session_id"] == str(tunnelled.pk)
        assert agent["opened"][0]["url"].startswith(f"ws://127.0.0.1:{daphne.port}/api/v1/agents/tunnel/")
        for _ in range(10):
            assert (await client.get(f"{base}/small")).content == b"hello, world\n"
        # Keep-alive: the tunnel is pooled, not reopened for every request.
        assert len(agent["opened"]) <= 2

        size = 64 * MIB
        digest, received = hashlib.sha256(), 0
        async with client.stream("GET", f"{base}/bytes", params={"size": size}) as response:
            async for chunk in response.aiter_raw():
                digest.update(chunk)
                received += len(chunk)
        assert received == size
        assert digest.hexdigest() == hashlib.sha256(b"x" * size).hexdigest()

        payload = os.urandom(8 * MIB)
        upload = await client.post(f"{base}/upload", content=payload)
        assert upload.json() == {"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


async def test_websocket_through_the_tunnel(daphne, agent, tunnelled, alice):
    url = f"ws://127.0.0.1:{daphne.port}/api/v1/http/{tunnelled.pk}/ws"
    async with ws_connect(url, additional_headers=credentials(tunnelled, alice), subprotocols=["chat"]) as ws:
        assert ws.subprotocol == "chat"
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), 5) == "hello"
        blob = os.urandom(300_000)
        await ws.send(blob)
        assert await asyncio.wait_for(ws.recv(), 5) == blob
        await ws.send("!close 4003")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd.code == 4003


async def test_auto_mode_falls_back_to_the_tunnel(daphne, agent, alice, template, docker_agent):
    unreachable = await sync_to_async(make_session)(
        alice, template, docker_agent, endpoint=f"10.255.255.1:{free_port()}"
    )
    base = f"{daphne.base}/api/v1/http/{unreachable.pk}"
    async with httpx.AsyncClient(timeout=30, headers=credentials(unreachable, alice)) as client:
        assert (await client.get(f"{base}/small")).status_code == 200
        assert len(agent["opened"]) >= 1


async def test_session_unreachable_from_the_agent_is_502(daphne, agent, tunnelled, alice):
    agent["backend"].endpoint = f"127.0.0.1:{free_port()}"
    async with httpx.AsyncClient(timeout=30, headers=credentials(tunnelled, alice)) as client:
        reply = await client.get(f"{daphne.base}/api/v1/http/{tunnelled.pk}/small")
    assert reply.status_code == 502


async def test_no_leader_is_502(daphne, tunnelled, alice):
    async with httpx.AsyncClient(timeout=30, headers=credentials(tunnelled, alice)) as client:
        reply = await client.get(f"{daphne.base}/api/v1/http/{tunnelled.pk}/small")
    assert reply.status_code == 502


async def test_tunnel_endpoint_refuses_strangers(daphne, agent, docker_agent):
    for path, token in (("unknown-stream", AGENT_TOKEN), ("unknown-stream", "wrong")):
        with pytest.raises(InvalidStatus) as refused:
            await ws_connect(
                f"ws://127.0.0.1:{daphne.port}/api/v1/agents/tunnel/{path}",
                additional_headers={"Authorization": f"Bearer {token}"},
            )
        assert refused.value.response.status_code == 403

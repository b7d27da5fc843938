"""Fixtures for hub tests: a communicator factory speaking the agent protocol."""

from __future__ import annotations

import json
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from agents_app.models import Agent
from agents_app.tokens import hash_token
from streamspace.asgi import application


def frame(type_: str, **payload) -> str:
    return json.dumps({"type": type_, "id": uuid.uuid4().hex, "ts": 0, "payload": payload})


def register_payload(agent: Agent, instance_id: str, *, is_leader: bool = True, sessions=None) -> dict:
    return {
        "agent_id": agent.agent_id,
        "instance_id": instance_id,
        "platform": agent.platform,
        "version": "test",
        "hostname": "test-host",
        "is_leader": is_leader,
        "capacity": {"cpu_millicores": 8000, "memory_mb": 16384, "sessions": 10},
        "sessions": sessions or [],
    }


class AgentClient:
    """A scripted agent over a WebsocketCommunicator."""

    def __init__(self, agent: Agent, token: str, instance_id: str):
        self.agent, self.token, self.instance_id = agent, token, instance_id
        self.comm = WebsocketCommunicator(
            application, "/api/v1/agents/connect", headers=[(b"authorization", f"Bearer {token}".encode())]
        )

    async def connect(self) -> bool:
        connected, _ = await self.comm.connect(timeout=5)
        if not connected:
            # The consumer refused, but runs until it hears the disconnect (its channel-layer
            # receive with it): end it inside this test's event loop.
            await self.comm.disconnect()
        return connected

    async def send(self, type_: str, **payload) -> None:
        await self.comm.send_to(text_data=frame(type_, **payload))

    async def send_raw(self, text: str) -> None:
        await self.comm.send_to(text_data=text)

    async def recv(self, timeout: float = 5) -> dict:
        return json.loads(await self.comm.receive_from(timeout=timeout))

    async def recv_type(self, type_: str, timeout: float = 5) -> dict:
        message = await self.recv(timeout)
        assert message["type"] == type_, message
        return message["payload"]

    async def register(self, *, is_leader: bool = True, sessions=None) -> dict:
        assert await self.connect()
        await self.send(
            "register", **register_payload(self.agent, self.instance_id, is_leader=is_leader, sessions=sessions)
        )
        return await self.recv_type("registered")

    async def nothing(self, timeout: float = 0.3) -> bool:
        return await self.comm.receive_nothing(timeout=timeout)

    async def close(self) -> None:
        await self.comm.disconnect()


@pytest.fixture
def hub_agent(db):
    """A docker agent with a known token, unique per test (registry keys do not collide)."""
    name = f"hub-{uuid.uuid4().hex[:8]}"
    token = f"token-{name}"
    agent = Agent.objects.create(agent_id=name, platform="docker", token_hash=hash_token(token))
    return agent, token


@pytest.fixture
def make_client(hub_agent):
    clients: list[AgentClient] = []

    def factory(instance_id: str = "i-1", agent_and_token=None) -> AgentClient:
        agent, token = agent_and_token or hub_agent
        client = AgentClient(agent, token, instance_id)
        clients.append(client)
        return client

    yield factory


@pytest.fixture(autouse=True)
def _redis_clean():
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        for key in client.scan_iter("streamspace:agents:*"):
            client.delete(key)
        client.close()
    yield


async def launch(user, template, **kwargs):
    from sessions_app.services import launch_session

    return await database_sync_to_async(launch_session)(user, template, **kwargs)

"""Fixtures for hub tests: agents with known tokens and scripted agent clients for them."""

from __future__ import annotations

import uuid

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from agents_app.models import Agent
from agents_app.tokens import hash_token
from tests.support.agent_client import AgentClient


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

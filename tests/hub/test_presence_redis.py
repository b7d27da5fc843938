"""Presence in Redis: key names and shapes (docs/architecture.md §8) with a real Redis."""

from __future__ import annotations

import json
import time

import pytest
import redis
from django.conf import settings

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def raw_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)


async def test_presence_keys_while_connected_and_gone_after(make_client, hub_agent):
    agent, _ = hub_agent
    leader, follower = make_client("leader-1"), make_client("follower-1")
    await leader.register(is_leader=True)
    await follower.register(is_leader=False)
    await leader.send("heartbeat", is_leader=True, active_sessions=0)
    await leader.send("session_status", session_id="barrier", state="running")
    await leader.recv_type("error")

    r = raw_redis()
    meta = json.loads(r.get(f"streamspace:agents:docker:{agent.agent_id}"))
    assert meta["agent_id"] == agent.agent_id and meta["platform"] == "docker" and meta["version"] == "test"
    connections = {k: json.loads(v) for k, v in r.hgetall(f"streamspace:agents:connections:{agent.agent_id}").items()}
    assert set(connections) == {"leader-1", "follower-1"}
    assert connections["leader-1"]["pod"] == settings.POD_NAME and connections["leader-1"]["is_leader"] is True
    assert connections["follower-1"]["is_leader"] is False
    assert connections["leader-1"]["channel"] != connections["follower-1"]["channel"]
    beats = r.hgetall(f"streamspace:agents:heartbeats:{agent.agent_id}")
    assert set(beats) == {"leader-1", "follower-1"} and abs(float(beats["leader-1"]) - time.time()) < 10
    for key in (
        f"streamspace:agents:docker:{agent.agent_id}",
        f"streamspace:agents:connections:{agent.agent_id}",
        f"streamspace:agents:heartbeats:{agent.agent_id}",
    ):
        assert 0 < r.ttl(key) <= settings.AGENT_HEARTBEAT_INTERVAL_S * 3, key

    await follower.close()
    assert set(r.hgetall(f"streamspace:agents:connections:{agent.agent_id}")) == {"leader-1"}
    await leader.close()
    assert not r.exists(f"streamspace:agents:docker:{agent.agent_id}")
    assert not r.exists(f"streamspace:agents:connections:{agent.agent_id}")
    assert not r.exists(f"streamspace:agents:heartbeats:{agent.agent_id}")
    r.close()

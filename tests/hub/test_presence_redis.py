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


async def test_a_new_leader_demotes_the_old_one_in_the_registry_at_once(make_client, hub_agent):
    """The deposed leader sends nothing more (it hangs or died): the registry shows one leader
    as soon as the new one announces itself, not after the old one's next heartbeat."""
    agent, _ = hub_agent
    old, new = make_client("old"), make_client("new")
    await old.register(is_leader=True)
    await new.register(is_leader=False)
    await new.send("leader", is_leader=True)
    await new.send("session_status", session_id="barrier", state="running")
    await new.recv_type("error")  # the leader frame has been handled
    connections = {
        k: json.loads(v) for k, v in raw_redis().hgetall(f"streamspace:agents:connections:{agent.agent_id}").items()
    }
    assert {k: v["is_leader"] for k, v in connections.items()} == {"old": False, "new": True}
    # Registering as leader demotes too (a leader that reconnects elsewhere after a takeover).
    third = make_client("third")
    await third.register(is_leader=True)
    await third.send("session_status", session_id="barrier", state="running")
    await third.recv_type("error")
    connections = {
        k: json.loads(v) for k, v in raw_redis().hgetall(f"streamspace:agents:connections:{agent.agent_id}").items()
    }
    assert [k for k, v in connections.items() if v["is_leader"]] == ["third"]


async def test_a_replaced_socket_closing_late_leaves_the_new_sockets_entry(make_client, hub_agent):
    """An agent gave up on a slow registration and registered the same instance again on a
    new socket: the old socket's disconnect, coming last, does not remove the new entry."""
    agent, _ = hub_agent
    old, new = make_client("same-instance"), make_client("same-instance")
    await old.register(is_leader=True)
    await new.register(is_leader=True)
    r = raw_redis()
    key = f"streamspace:agents:connections:{agent.agent_id}"
    new_channel = json.loads(r.hget(key, "same-instance"))["channel"]
    await old.close()
    assert json.loads(r.hget(key, "same-instance"))["channel"] == new_channel
    assert r.hexists(f"streamspace:agents:heartbeats:{agent.agent_id}", "same-instance")
    assert r.exists(f"streamspace:agents:docker:{agent.agent_id}")
    await new.close()
    assert not r.exists(key)
    r.close()

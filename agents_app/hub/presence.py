"""Presence: which agent instances are connected to which replica, kept in Redis by the hub
consumers (docs/architecture.md §8).

Keys (TTL refreshed by heartbeats, so a crashed replica's entries expire on their own):

- ``streamspace:agents:{platform}:{agent_id}`` → agent metadata (JSON string)
- ``streamspace:agents:connections:{agent_id}`` → hash ``instance_id`` → ``{"pod", "channel", "is_leader"}``
- ``streamspace:agents:heartbeats:{agent_id}`` → hash ``instance_id`` → last heartbeat (epoch seconds)

Redis 7.0 has no per-field TTL, so readers treat an instance whose heartbeat is older than
``STALE_AFTER_INTERVALS`` heartbeat intervals as gone, and the stale-instance sweep deletes
its fields. Without ``REDIS_URL`` (the single-process embedded default) the same interface is
served from process memory.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from streamspace import redis_client

PREFIX = "streamspace:agents"
STALE_AFTER_INTERVALS = 3


def ttl_s() -> int:
    return int(settings.AGENT_HEARTBEAT_INTERVAL_S * STALE_AFTER_INTERVALS)


def meta_key(platform: str, agent_id: str) -> str:
    return f"{PREFIX}:{platform}:{agent_id}"


def connections_key(agent_id: str) -> str:
    return f"{PREFIX}:connections:{agent_id}"


def heartbeats_key(agent_id: str) -> str:
    return f"{PREFIX}:heartbeats:{agent_id}"


class MemoryRegistryStore:
    """Process-local stand-in for Redis hashes/strings with TTLs (embedded default only)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.expiry: dict[str, float] = {}

    def _alive(self, key: str) -> bool:
        deadline = self.expiry.get(key)
        if deadline is not None and deadline < time.monotonic():
            self.values.pop(key, None)
            self.expiry.pop(key, None)
        return key in self.values

    def set(self, key: str, value: str, ttl: int) -> None:
        self.values[key] = value
        self.expiry[key] = time.monotonic() + ttl

    def get(self, key: str) -> Any:
        return self.values.get(key) if self._alive(key) else None

    def hset(self, key: str, field: str, value: str, ttl: int) -> None:
        if not self._alive(key):
            self.values[key] = {}
        self.values[key][field] = value
        self.expiry[key] = time.monotonic() + ttl

    def hdel(self, key: str, field: str) -> None:
        if self._alive(key):
            self.values[key].pop(field, None)
            if not self.values[key]:
                self.values.pop(key)

    def hgetall(self, key: str) -> dict[str, str]:
        return dict(self.values[key]) if self._alive(key) else {}


_memory = MemoryRegistryStore()
_clients: dict[tuple[int, Any], Any] = {}


def _redis() -> Any:
    """One asyncio Redis client per event loop and Redis target (tests run many loops and
    point the settings at other servers; daphne runs one loop on one target)."""
    key = (id(asyncio.get_running_loop()), redis_client.target())
    client = _clients.get(key)
    if client is None:
        client = redis_client.client(asyncio=True, decode_responses=True, socket_timeout=5)
        _clients[key] = client
    return client


def _sync_redis() -> Any:
    return redis_client.client(decode_responses=True, socket_timeout=5)


async def register_instance(
    *, platform: str, agent_id: str, instance_id: str, pod: str, channel: str, is_leader: bool, metadata: dict[str, Any]
) -> None:
    """Record a connected instance (on ``register``)."""
    ttl, now = ttl_s(), time.time()
    conn = json.dumps({"pod": pod, "channel": channel, "is_leader": is_leader})
    meta = json.dumps(metadata)
    if not settings.REDIS_URL:
        _memory.set(meta_key(platform, agent_id), meta, ttl)
        _memory.hset(connections_key(agent_id), instance_id, conn, ttl)
        _memory.hset(heartbeats_key(agent_id), instance_id, str(now), ttl)
        return
    async with _redis().pipeline(transaction=False) as pipe:
        pipe.set(meta_key(platform, agent_id), meta, ex=ttl)
        pipe.hset(connections_key(agent_id), instance_id, conn)
        pipe.expire(connections_key(agent_id), ttl)
        pipe.hset(heartbeats_key(agent_id), instance_id, now)
        pipe.expire(heartbeats_key(agent_id), ttl)
        await pipe.execute()


@dataclass(frozen=True, slots=True)
class Arrival:
    """One registered instance for :func:`register_instances`."""

    platform: str
    agent_id: str
    instance_id: str
    pod: str
    channel: str
    is_leader: bool
    metadata: dict[str, Any]


async def register_instances(arrivals: list[Arrival]) -> list[None]:
    """:func:`register_instance` for many sockets in one pipelined round trip (a reconnect
    herd registers them in batches, ``agents_app.hub.batch``), each leader's siblings demoted
    in the same trip (:func:`demote_others`)."""
    if not settings.REDIS_URL:
        for a in arrivals:
            await register_instance(
                platform=a.platform,
                agent_id=a.agent_id,
                instance_id=a.instance_id,
                pod=a.pod,
                channel=a.channel,
                is_leader=a.is_leader,
                metadata=a.metadata,
            )
            if a.is_leader:
                await demote_others(agent_id=a.agent_id, instance_id=a.instance_id)
        return [None] * len(arrivals)
    ttl, now = ttl_s(), time.time()
    async with _redis().pipeline(transaction=False) as pipe:
        for a in arrivals:
            conn = json.dumps({"pod": a.pod, "channel": a.channel, "is_leader": a.is_leader})
            pipe.set(meta_key(a.platform, a.agent_id), json.dumps(a.metadata), ex=ttl)
            pipe.hset(connections_key(a.agent_id), a.instance_id, conn)
            pipe.expire(connections_key(a.agent_id), ttl)
            pipe.hset(heartbeats_key(a.agent_id), a.instance_id, now)
            pipe.expire(heartbeats_key(a.agent_id), ttl)
            if a.is_leader:
                pipe.eval(DEMOTE_OTHERS_SCRIPT, 1, connections_key(a.agent_id), a.instance_id)
        await pipe.execute()
    return [None] * len(arrivals)


async def heartbeat(*, platform: str, agent_id: str, instance_id: str, pod: str, channel: str, is_leader: bool) -> None:
    """Refresh the instance's heartbeat and every TTL (one pipelined round trip)."""
    ttl, now = ttl_s(), time.time()
    conn = json.dumps({"pod": pod, "channel": channel, "is_leader": is_leader})
    if not settings.REDIS_URL:
        _memory.hset(heartbeats_key(agent_id), instance_id, str(now), ttl)
        _memory.hset(connections_key(agent_id), instance_id, conn, ttl)
        meta = _memory.get(meta_key(platform, agent_id))
        if meta is not None:
            _memory.set(meta_key(platform, agent_id), meta, ttl)
        return
    async with _redis().pipeline(transaction=False) as pipe:
        pipe.hset(heartbeats_key(agent_id), instance_id, now)
        pipe.expire(heartbeats_key(agent_id), ttl)
        pipe.hset(connections_key(agent_id), instance_id, conn)
        pipe.expire(connections_key(agent_id), ttl)
        pipe.expire(meta_key(platform, agent_id), ttl)
        await pipe.execute()


@dataclass(frozen=True, slots=True)
class Beat:
    """One heartbeat for :func:`heartbeats`."""

    platform: str
    agent_id: str
    instance_id: str
    pod: str
    channel: str
    is_leader: bool


async def heartbeats(beats: list[Beat]) -> list[None]:
    """:func:`heartbeat` for many sockets in one pipelined round trip (the hub batches the
    heartbeats that arrive while the previous trip is out, ``agents_app.hub.batch``)."""
    if not settings.REDIS_URL:
        for b in beats:
            await heartbeat(
                platform=b.platform,
                agent_id=b.agent_id,
                instance_id=b.instance_id,
                pod=b.pod,
                channel=b.channel,
                is_leader=b.is_leader,
            )
        return [None] * len(beats)
    ttl, now = ttl_s(), time.time()
    async with _redis().pipeline(transaction=False) as pipe:
        for b in beats:
            pipe.hset(heartbeats_key(b.agent_id), b.instance_id, now)
            pipe.expire(heartbeats_key(b.agent_id), ttl)
            pipe.hset(
                connections_key(b.agent_id),
                b.instance_id,
                json.dumps({"pod": b.pod, "channel": b.channel, "is_leader": b.is_leader}),
            )
            pipe.expire(connections_key(b.agent_id), ttl)
            pipe.expire(meta_key(b.platform, b.agent_id), ttl)
        await pipe.execute()
    return [None] * len(beats)


# KEYS = connections hash, heartbeats hash, meta key; ARGV[1] = instance id, ARGV[2] = the
# channel that must own the entry ('' for any). One atomic step, so a connection that ends late
# never removes the entry of the connection that replaced it.
UNREGISTER_SCRIPT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw and ARGV[2] ~= '' and cjson.decode(raw).channel ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[3])
end
return 1
"""


async def unregister_instance(*, platform: str, agent_id: str, instance_id: str, channel: str = "") -> None:
    """Remove the instance on a clean disconnect; the agent's keys go with its last instance.

    With ``channel``, only while the entry is that connection's: an agent that gave up on a
    slow registration and registered again on another socket (same ``instance_id``) keeps the
    new socket's entry when the old socket's disconnect comes last.
    """
    if not settings.REDIS_URL:
        raw = _memory.hgetall(connections_key(agent_id)).get(instance_id)
        if raw is not None and channel and json.loads(raw).get("channel") != channel:
            return
        _memory.hdel(connections_key(agent_id), instance_id)
        _memory.hdel(heartbeats_key(agent_id), instance_id)
        if not _memory.hgetall(connections_key(agent_id)):
            _memory.values.pop(meta_key(platform, agent_id), None)
        return
    keys = (connections_key(agent_id), heartbeats_key(agent_id), meta_key(platform, agent_id))
    await _redis().eval(UNREGISTER_SCRIPT, 3, *keys, instance_id, channel)


# KEYS[1] = connections hash, ARGV[1] = the new leader's instance id. Every other field that
# says is_leader is rewritten with is_leader false, in one atomic step.
DEMOTE_OTHERS_SCRIPT = """
local fields = redis.call('HGETALL', KEYS[1])
local demoted = 0
for i = 1, #fields, 2 do
  if fields[i] ~= ARGV[1] then
    local info = cjson.decode(fields[i + 1])
    if info.is_leader then
      info.is_leader = false
      redis.call('HSET', KEYS[1], fields[i], cjson.encode(info))
      demoted = demoted + 1
    end
  end
end
return demoted
"""


async def demote_others(*, agent_id: str, instance_id: str) -> int:
    """``instance_id`` announced itself leader: every other instance of the agent is recorded
    as a follower at once, so the registry (and the leaders metric read from it) never shows
    two leaders while a deposed one has not yet sent its next heartbeat. Returns how many were
    demoted."""
    if not settings.REDIS_URL:
        demoted = 0
        for other, raw in _memory.hgetall(connections_key(agent_id)).items():
            info = json.loads(raw)
            if other != instance_id and info.get("is_leader"):
                _memory.values[connections_key(agent_id)][other] = json.dumps({**info, "is_leader": False})
                demoted += 1
        return demoted
    return int(await _redis().eval(DEMOTE_OTHERS_SCRIPT, 1, connections_key(agent_id), instance_id))


def connections(agent_id: str) -> dict[str, dict[str, Any]]:
    """Live instances of an agent (sync; for services and the API): ``instance_id → info``.

    Instances whose last heartbeat is older than the stale limit are left out.
    """
    if settings.REDIS_URL:
        client = _sync_redis()
        try:
            raw_conns = client.hgetall(connections_key(agent_id))
            raw_beats = client.hgetall(heartbeats_key(agent_id))
        finally:
            client.close()
    else:
        raw_conns = _memory.hgetall(connections_key(agent_id))
        raw_beats = _memory.hgetall(heartbeats_key(agent_id))
    limit = time.time() - ttl_s()
    live: dict[str, dict[str, Any]] = {}
    for instance_id, raw in raw_conns.items():
        beat = float(raw_beats.get(instance_id, 0))
        if beat >= limit:
            live[instance_id] = {**json.loads(raw), "last_heartbeat": beat}
    return live


def forget_instance(agent_id: str, instance_id: str) -> None:
    """Delete a stale instance's fields (the stale-instance sweep; sync)."""
    if not settings.REDIS_URL:
        _memory.hdel(connections_key(agent_id), instance_id)
        _memory.hdel(heartbeats_key(agent_id), instance_id)
        return
    client = _sync_redis()
    try:
        client.hdel(connections_key(agent_id), instance_id)
        client.hdel(heartbeats_key(agent_id), instance_id)
    finally:
        client.close()

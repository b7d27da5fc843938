"""The reconnect herd (docs/architecture.md §13.2): a control-plane replica dies under many
agents, and every one of them registers again on the surviving replica, through
``agent_runtime``'s own reconnect (its list of replicas and its full-jitter backoff),
within a bound that follows from the backoff settings. The registry (Redis) and the
agents table agree afterwards, and every agent keeps exactly one leader."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time

import pytest
import redis
from channels.db import database_sync_to_async
from django.conf import settings

from agent_runtime.config import AgentConfig
from agent_runtime.connection import AgentConnection
from agent_runtime.leader import AlwaysLeader
from agents_app.hub import presence
from agents_app.models import Agent, AgentInstance
from agents_app.tokens import hash_token
from tests.support.fakes import RecordingBackend
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import start_replica
from tests.support.waits import until

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

AGENTS = 100
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 4.0
HANDSHAKE_ALLOWANCE_S = 10.0  # the agent's own open and register timeouts


def reconnect_bound() -> float:
    """How long an agent may take to register again after its replica dies: its first wait
    (drawn from [0, initial]) and its first retry's handshake and registration; should that
    retry fail, the next two waits (one attempt at the dead replica, refused at once, then
    the survivor again) and one more handshake."""
    windows = [min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2**n) for n in range(3)]
    return sum(windows) + 2 * HANDSHAKE_ALLOWANCE_S


@pytest.fixture
def replicas():
    ports = {"a": free_port(), "b": free_port()}
    procs = {name: start_replica(f"herd-replica-{name}", port) for name, port in ports.items()}
    try:
        for name, port in ports.items():
            wait_for_port(port, procs[name], timeout=60)
        yield {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}, procs
    finally:
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)


def _make_agents() -> None:
    Agent.objects.bulk_create(
        Agent(agent_id=f"herd-{i}", platform="docker", token_hash=hash_token(f"herd-token-{i}")) for i in range(AGENTS)
    )


def _instances_on(pod: str) -> int:
    return AgentInstance.objects.filter(
        agent__agent_id__startswith="herd-", connected=True, is_leader=True, pod=pod
    ).count()


def _registry_pods() -> dict[str, list[tuple[str, bool]]]:
    """Every herd agent's live instances in Redis: agent → [(pod, is_leader)]."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        out = {}
        for i in range(AGENTS):
            entries = client.hgetall(presence.connections_key(f"herd-{i}"))
            out[f"herd-{i}"] = [(json.loads(v)["pod"], json.loads(v)["is_leader"]) for v in entries.values()]
        return out
    finally:
        client.close()


async def test_agents_of_a_killed_replica_register_on_the_survivor_within_the_backoff_bound(replicas, tmp_path):
    bases, procs = replicas
    await database_sync_to_async(_make_agents)()
    agents = [
        AgentConnection(
            AgentConfig(
                control_plane=f"{bases['a']},{bases['b']}",
                token=f"herd-token-{i}",
                agent_id=f"herd-{i}",
                platform="docker",
                instance_id=f"herd-{i}-0",
                data_dir=tmp_path,
                backoff_initial=BACKOFF_INITIAL_S,
                backoff_max=BACKOFF_MAX_S,
            ),
            RecordingBackend(agent_id=f"herd-{i}", data_dir=tmp_path),
            AlwaysLeader(),
        )
        for i in range(AGENTS)
    ]
    tasks = [asyncio.ensure_future(agent.run()) for agent in agents]
    try:
        await asyncio.wait_for(asyncio.gather(*(agent.connected.wait() for agent in agents)), 120)
        assert await until(lambda: _count_is(_instances_on, "herd-replica-a", AGENTS), timeout=30)

        procs["a"].send_signal(signal.SIGKILL)
        procs["a"].wait(timeout=10)
        killed = time.monotonic()
        await until(lambda: all(agent.registrations == 2 for agent in agents), timeout=reconnect_bound() + 30)
        took = time.monotonic() - killed
        assert took <= reconnect_bound(), f"the herd took {took:.1f} s, bound {reconnect_bound():.1f} s"

        # The table: one connected leader instance per agent, on the survivor, none left on A.
        assert await database_sync_to_async(_instances_on)("herd-replica-b") == AGENTS
        rows = await database_sync_to_async(
            lambda: list(
                AgentInstance.objects.filter(agent__agent_id__startswith="herd-").values_list("pod", "is_leader")
            )
        )()
        assert sorted(rows) == [("herd-replica-b", True)] * AGENTS
        # The registry agrees: each agent's one live instance is on B and leads.
        pods = await asyncio.to_thread(_registry_pods)
        assert pods == {f"herd-{i}": [("herd-replica-b", True)] for i in range(AGENTS)}
        # And the agents are served there: every socket still answers (no late drop).
        assert all(agent.connected.is_set() for agent in agents)
    finally:
        for agent in agents:
            await agent.shutdown(1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _count_is(func, pod: str, expected: int) -> bool:
    return await database_sync_to_async(func)(pod) == expected

"""Registrations batched into one call (``agents_app.hub.rows.register_many``, docs/architecture.md
§7.1): the same rows as one ``register`` at a time — instance upserts, one leader per agent
(the last claim wins), unacked commands returned, a lost session failed — and one entry
per registration."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from django.utils import timezone

from agent_runtime import protocol
from agents_app.hub import rows
from agents_app.hub.batch import Batcher
from agents_app.models import Agent, AgentCommand, AgentInstance, CommandState
from agents_app.tokens import hash_token
from tests.support.factories import make_session, make_user

pytestmark = pytest.mark.django_db


def hello(agent: Agent, instance_id: str, *, leader: bool = True) -> protocol.Register:
    return protocol.Register(
        agent_id=agent.agent_id,
        instance_id=instance_id,
        platform=agent.platform,
        version="t",
        hostname="h",
        is_leader=leader,
    )


def agent(name: str) -> Agent:
    return Agent.objects.create(agent_id=name, platform="docker", token_hash=hash_token(f"{name}-token"))


def registration(who: Agent, instance_id: str, *, leader: bool = True, channel: str = "") -> rows.Registration:
    return rows.Registration(who, hello(who, instance_id, leader=leader), "pod-b", channel or f"ch-{instance_id}")


def test_one_entry_per_registration_with_the_rows_register_writes():
    x, y = agent("x"), agent("y")
    old = AgentInstance.objects.create(agent=x, instance_id="x-0", is_leader=True, connected=True, pod="pod-a")
    results = rows.register_many(
        [
            registration(x, "x-1"),
            registration(y, "y-0", leader=False),
            registration(x, "x-1", channel="ch-x-1-again"),  # the same socket again: applied after, wins
        ]
    )
    assert len(results) == 3 and all(isinstance(r, tuple) for r in results)
    instances = {(i.agent.agent_id, i.instance_id): i for i in AgentInstance.objects.select_related("agent")}
    assert instances["x", "x-1"].is_leader and instances["x", "x-1"].connected
    assert instances["x", "x-1"].channel_name == "ch-x-1-again" and instances["x", "x-1"].pod == "pod-b"
    assert not instances["x", "x-0"].is_leader  # the new leader's sibling was demoted
    assert old.pk == instances["x", "x-0"].pk
    assert not instances["y", "y-0"].is_leader and instances["y", "y-0"].connected
    assert results[0][0].pk == results[2][0].pk == instances["x", "x-1"].pk
    assert Agent.objects.filter(last_seen__isnull=False).count() == 2


def test_two_instances_of_one_agent_claiming_leadership_leave_the_last_as_leader():
    x = agent("x")
    rows.register_many([registration(x, "x-0"), registration(x, "x-1")])
    assert list(AgentInstance.objects.filter(is_leader=True).values_list("instance_id", flat=True)) == ["x-1"]


def test_a_leader_gets_its_unacked_commands_back_and_loses_sessions_it_no_longer_has(template):
    x, y = agent("x"), agent("y")
    user = make_user("owner")
    lost = make_session(user, template, x, state="running")
    kept = make_session(user, template, y, state="running")
    sent = AgentCommand.objects.create(
        agent=x, action="stop_session", state=CommandState.SENT, sent_at=timezone.now() - timedelta(seconds=5)
    )
    results = rows.register_many(
        [
            registration(x, "x-0"),  # reports no sessions: its running one is lost
            rows.Registration(
                y,
                protocol.Register(
                    agent_id="y",
                    instance_id="y-0",
                    platform="docker",
                    version="t",
                    hostname="h",
                    is_leader=True,
                    sessions=[protocol.InventoryItem(session_id=str(kept.pk), state="running")],
                ),
                "pod-b",
                "ch-y",
            ),
        ]
    )
    assert all(isinstance(r, tuple) for r in results)
    lost.refresh_from_db()
    kept.refresh_from_db()
    assert lost.state == "failed" and kept.state == "running"
    sent.refresh_from_db()
    assert sent.state == CommandState.PENDING


def test_a_failing_registration_fails_alone(monkeypatch):
    x, y = agent("x"), agent("y")

    def boom(agent, items):
        if agent.agent_id == "x":
            raise RuntimeError("reconcile failed")
        return items

    monkeypatch.setattr(rows, "_vetted_inventory", boom)
    item = [protocol.InventoryItem(session_id="00000000-0000-0000-0000-000000000000", state="running")]
    regs = [
        rows.Registration(x, protocol.Register(**{**_fields(hello(x, "x-0")), "sessions": item}), "pod-b", "ch-x"),
        registration(y, "y-0"),
    ]
    results = rows.register_many(regs)
    assert isinstance(results[0], RuntimeError) and isinstance(results[1], tuple)
    assert AgentInstance.objects.get(instance_id="y-0").is_leader


def _fields(register: protocol.Register) -> dict:
    return {name: getattr(register, name) for name in register.__struct_fields__}


@pytest.mark.asyncio
async def test_the_batcher_takes_what_queued_during_a_call_in_the_next_and_raises_per_caller():
    calls: list[list[int]] = []
    release = asyncio.Event()

    async def double(items: list[int]) -> list:
        calls.append(items)
        if len(calls) == 1:
            await release.wait()
        return [ValueError(f"odd {i}") if i % 2 else i * 2 for i in items]

    batcher = Batcher(double)
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0)  # the first call starts at once, alone
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2, 4)]
    await asyncio.sleep(0)
    release.set()
    assert await first == 0
    done = await asyncio.gather(*rest, return_exceptions=True)
    assert calls == [[0], [1, 2, 4]]
    assert isinstance(done[0], ValueError) and done[1:] == [4, 8]


def test_subscribers_look_their_subscriptions_up_once_per_batch_of_events(monkeypatch):
    """The plugin subscriptions behind every event are read from the cache once for a batch of
    registrations' ``agent.connected`` events, and once per event outside a batch."""
    from plugins_app import delivery, registry
    from streamspace.shared_cache import shared_cache

    cache = shared_cache()

    reads: list[str] = []
    real_get = cache.get

    def counting_get(key, *args, **kwargs):
        if key in (delivery.SUBSCRIPTIONS_CACHE_KEY, registry.ACTIVE_CACHE_KEY):
            reads.append(key)
        return real_get(key, *args, **kwargs)

    x, y = agent("x"), agent("y")
    delivery.subscribed_plugins("agent.connected")  # warm the cache: reads come from it
    registry.active()
    monkeypatch.setattr(cache, "get", counting_get)
    rows.after_register_many([(x, hello(x, "x-0")), (y, hello(y, "y-0"))])
    assert sorted(reads) == sorted([delivery.SUBSCRIPTIONS_CACHE_KEY, registry.ACTIVE_CACHE_KEY])
    reads.clear()
    rows.after_register(x, hello(x, "x-0"))
    rows.after_register(y, hello(y, "y-0"))
    assert len(reads) == 4

"""Agent selection for a new session (docs/architecture.md §7.2): platform, connected leader first,
least loaded next, name last; what it reports for the direct send."""

from __future__ import annotations

import pytest
from django.utils import timezone

from agents_app.models import Agent, AgentCommand, AgentInstance
from sessions_app.placement import NoAgent, direct_route, select_agent
from tests.support.factories import make_leader, make_session

pytestmark = pytest.mark.django_db


def agent(name: str, platform: str = "docker", **extra) -> Agent:
    return Agent.objects.create(agent_id=name, platform=platform, token_hash=f"hash-{name}", **extra)


def lead(owner: Agent, instance_id: str = "i-1", *, channel: str = "chan", minutes_ago: int = 0) -> AgentInstance:
    connected_at = timezone.now() - timezone.timedelta(minutes=minutes_ago)
    return make_leader(owner, instance_id, channel_name=channel, connected_at=connected_at)


def test_only_enabled_agents_of_the_platform_are_candidates():
    with pytest.raises(NoAgent):
        select_agent("docker")
    agent("k", platform="kubernetes")
    agent("off", enabled=False)
    agent("loc", platform="local")
    with pytest.raises(NoAgent):
        select_agent("docker")
    assert select_agent("kubernetes").agent_id == "k"
    assert select_agent("").agent_id == "k"  # any image platform: docker or kubernetes, never local
    assert select_agent("local").agent_id == "loc"


def test_a_connected_leader_beats_a_lighter_load(alice, template):
    idle, busy = agent("a-idle"), agent("b-busy")
    for _ in range(3):
        make_session(alice, template, busy)
    assert select_agent("docker").agent_id == "a-idle"  # no leader anywhere: least loaded
    lead(busy)
    chosen = select_agent("docker")
    assert chosen.agent_id == "b-busy" and chosen.has_leader and chosen.load == 3
    lead(idle)
    assert select_agent("docker").agent_id == "a-idle"


def test_load_counts_active_sessions_only_and_ties_go_by_name(alice, template):
    first, second = agent("first"), agent("second")
    for state in ("stopped", "failed"):
        make_session(alice, template, first, state=state)
    make_session(alice, template, second, state="hibernated")  # holds its place on the agent
    assert select_agent("docker").agent_id == "first"
    make_session(alice, template, first, state="pending")
    make_session(alice, template, first, state="running")
    assert select_agent("docker").agent_id == "second"


def test_it_reports_the_newest_connected_leader_and_waiting_commands(alice, template):
    owner = agent("solo")
    assert direct_route(select_agent("docker")) is None  # no leader
    lead(owner, "old", channel="chan-old", minutes_ago=5)
    lead(owner, "new", channel="chan-new")
    AgentInstance.objects.create(agent=owner, instance_id="follower", pod="p", channel_name="f", connected=True)
    assert direct_route(select_agent("docker")) == ("new", "chan-new")
    session = make_session(alice, template, owner)
    AgentCommand.objects.create(agent=owner, session=session, action="stop_session")
    assert select_agent("docker").has_pending
    assert direct_route(select_agent("docker")) is None  # the older command goes first
    AgentInstance.objects.filter(agent=owner).update(channel_name="")
    assert select_agent("docker").has_leader and direct_route(select_agent("docker")) is None

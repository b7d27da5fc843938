"""Agent selection for a new session (docs/architecture.md §7.2): platform, a connected leader
(required), least loaded next, name last; what it reports for the direct send. What else rules
an agent out (full, image, features) is in tests/sessions/test_availability.py."""

from __future__ import annotations

import pytest
from django.utils import timezone

from agents_app.models import Agent, AgentCommand, AgentInstance
from sessions_app.models import Template
from sessions_app.placement import NoAgent, direct_route, select_agent
from tests.support.factories import make_leader, make_session

pytestmark = pytest.mark.django_db


def agent(name: str, platform: str = "docker", **extra) -> Agent:
    return Agent.objects.create(agent_id=name, platform=platform, token_hash=f"hash-{name}", **extra)


def of(platform: str) -> Template:
    """An (unsaved) template of ``platform`` that any connected agent of it can serve."""
    return Template(slug=f"t-{platform or 'any'}", platform=platform, image="" if platform == "local" else "img:1")


def lead(owner: Agent, instance_id: str = "i-1", *, channel: str = "chan", minutes_ago: int = 0) -> AgentInstance:
    connected_at = timezone.now() - timezone.timedelta(minutes=minutes_ago)
    return make_leader(owner, instance_id, channel_name=channel, connected_at=connected_at)


def test_only_enabled_agents_of_the_platform_with_a_connected_leader_are_chosen():
    with pytest.raises(NoAgent, match="No agent is registered for docker"):
        select_agent(of("docker"))
    k, loc = agent("k", platform="kubernetes"), agent("loc", platform="local")
    lead(agent("off", enabled=False))
    with pytest.raises(NoAgent, match="No agent is registered for docker"):
        select_agent(of("docker"))
    with pytest.raises(NoAgent, match="agent k is registered but offline"):
        select_agent(of("kubernetes"))
    lead(k)
    lead(loc)
    assert select_agent(of("kubernetes")).agent_id == "k"
    assert select_agent(of("")).agent_id == "k"  # any image platform: docker or kubernetes, never local
    assert select_agent(of("local")).agent_id == "loc"


def test_a_connected_leader_is_required_and_the_lighter_load_wins(alice, template):
    idle, busy = agent("a-idle"), agent("b-busy")
    for _ in range(3):
        make_session(alice, template, busy)
    with pytest.raises(NoAgent):
        select_agent(of("docker"))  # registered, but no leader connected anywhere
    lead(busy)
    chosen = select_agent(of("docker"))
    assert chosen.agent_id == "b-busy" and chosen.has_leader and chosen.load == 3
    lead(idle)
    assert select_agent(of("docker")).agent_id == "a-idle"


def test_load_counts_active_sessions_only_and_ties_go_by_name(alice, template):
    first, second = agent("first"), agent("second")
    lead(first)
    lead(second)
    for state in ("stopped", "failed"):
        make_session(alice, template, first, state=state)
    make_session(alice, template, second, state="hibernated")  # holds its place on the agent
    assert select_agent(of("docker")).agent_id == "first"
    make_session(alice, template, first, state="pending")
    make_session(alice, template, first, state="running")
    assert select_agent(of("docker")).agent_id == "second"


def test_it_reports_the_newest_connected_leader_and_waiting_commands(alice, template):
    owner = agent("solo")
    lead(owner, "old", channel="chan-old", minutes_ago=5)
    lead(owner, "new", channel="chan-new")
    AgentInstance.objects.create(agent=owner, instance_id="follower", pod="p", channel_name="f", connected=True)
    assert direct_route(select_agent(of("docker"))) == ("new", "chan-new")
    session = make_session(alice, template, owner)
    AgentCommand.objects.create(agent=owner, session=session, action="stop_session")
    assert select_agent(of("docker")).has_pending
    assert direct_route(select_agent(of("docker"))) is None  # the older command goes first
    AgentInstance.objects.filter(agent=owner).update(channel_name="")
    assert select_agent(of("docker")).has_leader and direct_route(select_agent(of("docker"))) is None

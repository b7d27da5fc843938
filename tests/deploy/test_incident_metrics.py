"""The metrics an operator reads during an incident: sessions by state and platform, the
oldest unfinished launch, launch and wake latency, command latency, agent sockets per
replica and requests that died of a database or Redis error."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import DatabaseError
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry

from agent_runtime import protocol
from agents_app.hub import rows
from agents_app.models import AgentCommand, CommandState
from sessions_app import state
from sessions_app.models import Session
from streamspace import metrics
from tests.support.factories import make_session

pytestmark = pytest.mark.django_db


@pytest.fixture
def scrape():
    registry = CollectorRegistry()
    metrics.register_collectors(registry)
    return registry.get_sample_value


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_sessions_by_state_and_platform_and_the_oldest_starting(scrape, alice, template, docker_agent):
    make_session(alice, template, docker_agent, state="running")
    make_session(alice, template, docker_agent, state="running")
    make_session(alice, template, docker_agent, state="starting", idle_for_s=900)
    make_session(alice, template, docker_agent, state="starting", idle_for_s=30)
    assert scrape("streamspace_sessions", {"state": "running", "platform": "docker"}) == 2
    assert scrape("streamspace_sessions", {"state": "starting", "platform": "docker"}) == 2
    oldest = scrape("streamspace_sessions_oldest_transitional_seconds", {"state": "starting", "platform": "docker"})
    assert 900 <= oldest < 960
    assert (
        scrape("streamspace_sessions_oldest_transitional_seconds", {"state": "running", "platform": "docker"}) is None
    )


def test_time_to_running_after_a_launch_and_after_a_wake(
    alice, template, docker_agent, django_capture_on_commit_callbacks
):
    launched = make_session(alice, template, docker_agent, state="starting")
    Session.objects.filter(pk=launched.pk).update(created_at=timezone.now() - timedelta(seconds=40))
    launched = Session.objects.only("id", "state", "user_id").get(pk=launched.pk)  # created_at not loaded
    before = sample("streamspace_session_ready_seconds_count", {"kind": "launch"})
    slow = sample("streamspace_session_ready_seconds_bucket", {"kind": "launch", "le": "30.0"})
    with django_capture_on_commit_callbacks(execute=True):
        state.transition(launched, "running")
    assert sample("streamspace_session_ready_seconds_count", {"kind": "launch"}) == before + 1
    assert sample("streamspace_session_ready_seconds_bucket", {"kind": "launch", "le": "30.0"}) == slow  # > 30 s

    waking = make_session(alice, template, docker_agent, state="waking", idle_for_s=3)
    before = sample("streamspace_session_ready_seconds_count", {"kind": "wake"})
    with django_capture_on_commit_callbacks(execute=True):
        state.transition(waking, "running")
    assert sample("streamspace_session_ready_seconds_count", {"kind": "wake"}) == before + 1


def test_command_latency_by_action_and_outcome(alice, template, docker_agent):
    session = make_session(alice, template, docker_agent, state="stopping")
    command = AgentCommand.objects.create(
        agent=docker_agent, session=session, action="stop_session", state=CommandState.SENT
    )
    before = sample("streamspace_agent_command_seconds_count", {"action": "stop_session", "outcome": "failed"})
    rows.complete(docker_agent, protocol.Result(command_id=str(command.pk), ok=False, error="boom"))
    after = sample("streamspace_agent_command_seconds_count", {"action": "stop_session", "outcome": "failed"})
    assert after == before + 1


def test_requests_that_die_of_a_database_error_are_counted(monkeypatch):
    metrics.register_collectors()
    before = sample("streamspace_dependency_errors_total", {"dependency": "database"})
    try:
        raise DatabaseError("connection refused")
    except DatabaseError:
        metrics.count_dependency_error(sender=None)
    assert sample("streamspace_dependency_errors_total", {"dependency": "database"}) == before + 1

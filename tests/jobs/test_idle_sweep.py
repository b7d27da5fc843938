"""The idle sweep (docs/architecture.md §11): who hibernates, who does not, and at what query cost."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents_app.models import AgentCommand
from sessions_app import sweeps
from sessions_app.models import Session
from streamspace.audit.models import AuditEvent
from tests.support.factories import bulk_sessions, make_session

pytestmark = pytest.mark.django_db


def test_idle_session_is_hibernated_and_active_one_is_not(alice, template, docker_agent):
    idle = make_session(alice, template, docker_agent, idle_timeout_s=5, idle_for_s=6)
    active = make_session(alice, template, docker_agent, idle_timeout_s=5, idle_for_s=2)
    result = sweeps.idle_sweep()
    assert result.hibernated == [str(idle.pk)]
    idle.refresh_from_db()
    active.refresh_from_db()
    assert (idle.state, active.state) == ("hibernating", "running")
    command = AgentCommand.objects.get(session=idle)
    assert command.action == "hibernate_session"
    audit = AuditEvent.objects.get(action="session.hibernate", target_id=str(idle.pk))
    assert audit.details == {"reason": "idle"}


def test_each_session_uses_its_own_timeout(alice, template, docker_agent):
    short = make_session(alice, template, docker_agent, idle_timeout_s=60, idle_for_s=120)
    long = make_session(alice, template, docker_agent, idle_timeout_s=3600, idle_for_s=120)
    never = make_session(alice, template, docker_agent, idle_timeout_s=0, idle_for_s=10**6)
    assert sweeps.hibernate_idle_sessions() == [str(short.pk)]
    assert Session.objects.get(pk=long.pk).state == "running"
    assert Session.objects.get(pk=never.pk).state == "running"


def test_sweep_is_idempotent(alice, template, docker_agent):
    make_session(alice, template, docker_agent, idle_timeout_s=5, idle_for_s=60)
    assert len(sweeps.idle_sweep().hibernated) == 1
    assert sweeps.idle_sweep().hibernated == []
    assert AgentCommand.objects.count() == 1


def test_activity_between_selection_and_claim_wins(alice, template, docker_agent, monkeypatch):
    session = make_session(alice, template, docker_agent, idle_timeout_s=5, idle_for_s=60)
    real = sweeps.idle_sessions

    def select_then_touch(now=None, *, limit=None):
        ids = real(now, limit=limit)
        Session.objects.filter(pk=session.pk).update(last_activity=timezone.now() + timedelta(seconds=1))
        return ids

    monkeypatch.setattr(sweeps, "idle_sessions", select_then_touch)
    assert sweeps.hibernate_idle_sessions() == []
    assert Session.objects.get(pk=session.pk).state == "running"


def test_long_hibernated_sessions_are_stopped_only_when_enabled(alice, template, docker_agent, settings):
    old = make_session(alice, template, docker_agent, state="hibernated", idle_for_s=7200)
    recent = make_session(alice, template, docker_agent, state="hibernated", idle_for_s=60)
    settings.STREAMSPACE_HIBERNATED_MAX_AGE_S = 0
    assert sweeps.idle_sweep().stopped == []
    settings.STREAMSPACE_HIBERNATED_MAX_AGE_S = 3600
    assert sweeps.idle_sweep().stopped == [str(old.pk)]
    assert Session.objects.get(pk=old.pk).state == "stopping"
    assert Session.objects.get(pk=recent.pk).state == "hibernated"
    assert AuditEvent.objects.filter(action="session.expire", target_id=str(old.pk)).exists()


def test_sweep_batch_bounds_the_work(alice, template, docker_agent, settings):
    settings.STREAMSPACE_IDLE_SWEEP_BATCH = 3
    bulk_sessions(alice, template, docker_agent, 7, idle_for_s=3600, idle_timeout_s=60)
    assert len(sweeps.hibernate_idle_sessions()) == 3
    assert len(sweeps.hibernate_idle_sessions()) == 3
    assert len(sweeps.hibernate_idle_sessions()) == 1
    assert Session.objects.filter(state="hibernating").count() == 7


@pytest.mark.postgres
def test_ten_thousand_running_sessions_in_bounded_queries(alice, bob, template, docker_agent):
    """10,000 running sessions: selecting the idle ones is one query; a chunk of idle ones
    (``sweeps.IDLE_CLAIM_CHUNK``) costs a constant number of queries, not a few per session."""
    bulk_sessions(alice, template, docker_agent, 10_000, idle_for_s=10, idle_timeout_s=3600)
    with CaptureQueriesContext(connection) as nothing_idle:
        assert sweeps.idle_sweep().hibernated == []
    assert len(nothing_idle) <= 2, [q["sql"] for q in nothing_idle.captured_queries]

    bulk_sessions(bob, template, docker_agent, 20, idle_for_s=7200, idle_timeout_s=60)
    with CaptureQueriesContext(connection) as twenty_idle:
        assert len(sweeps.idle_sweep().hibernated) == 20
    # claim, state UPDATE, the state history's UPDATE and INSERT (sessions_app.history), audit
    # INSERT, command INSERT (+ the savepoint pair of the test's transaction)
    assert len(twenty_idle) - len(nothing_idle) <= 8, [q["sql"] for q in twenty_idle.captured_queries]
    assert Session.objects.filter(state="running").count() == 10_000

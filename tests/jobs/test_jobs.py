"""Quota reconciliation, the agent sweeps as tasks, and the in-process job runner (run_jobs)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management import call_command
from django.utils import timezone

from agents_app import tasks as agent_tasks
from agents_app.models import AgentCommand, AgentInstance
from sessions_app import sweeps
from sessions_app import tasks as session_tasks
from sessions_app.models import Session, UserQuota
from streamspace import jobs
from streamspace.audit.models import AuditEvent
from tests.support.factories import make_session

pytestmark = pytest.mark.django_db


def test_quota_reconciliation_reports_users_over_their_limits(alice, bob, template, docker_agent):
    make_session(alice, template, docker_agent)
    make_session(alice, template, docker_agent, state="hibernated")
    make_session(bob, template, docker_agent)
    make_session(alice, template, docker_agent, state="stopped")
    UserQuota.objects.create(user=alice, max_sessions=1)  # lowered after launch
    drifted = sweeps.reconcile_quotas()
    assert [(d["username"], d["over"], d["usage"]["sessions"]) for d in drifted] == [("alice", ["max_sessions"], 2)]
    event = AuditEvent.objects.get(action="quota.drift")
    assert event.target_id == str(alice.pk) and event.details["usage"]["cpu_millicores"] == 100
    assert session_tasks.reconcile_quotas() == 1  # idempotent: reported again, nothing changed


def test_command_sweep_task(alice, template, docker_agent, settings):
    session = make_session(alice, template, docker_agent, state="starting", idle_for_s=3600)
    old = timezone.now() - timedelta(hours=2)
    command = AgentCommand.objects.create(agent=docker_agent, session=session, action="start_session", state="sent")
    AgentCommand.objects.filter(pk=command.pk).update(sent_at=old, created_at=old)
    settings.AGENT_COMMAND_MAX_AGE_S = 3600
    settings.STREAMSPACE_STUCK_SESSION_S = 600
    result = agent_tasks.command_sweep()
    assert result["expired"] == 1
    assert AgentCommand.objects.get(pk=command.pk).state == "expired"
    assert Session.objects.get(pk=session.pk).state == "failed"
    assert agent_tasks.command_sweep() == {"requeued": 0, "expired": 0}


def test_an_expired_command_fails_only_a_session_still_waiting_on_it(alice, template, docker_agent, settings):
    """A start whose result was lost (acked, never finished) expires; its session, running by
    the agent's statuses meanwhile, keeps running. A session still waiting on its start fails."""
    old = timezone.now() - timedelta(hours=2)
    running = make_session(alice, template, docker_agent, state="running")
    waiting = make_session(alice, template, docker_agent, state="starting")
    for session in (running, waiting):
        command = AgentCommand.objects.create(
            agent=docker_agent, session=session, action="start_session", state="acked"
        )
        AgentCommand.objects.filter(pk=command.pk).update(sent_at=old, acked_at=old, created_at=old)
    settings.AGENT_COMMAND_MAX_AGE_S = 3600
    assert agent_tasks.command_sweep()["expired"] == 2
    assert Session.objects.get(pk=running.pk).state == "running"
    assert Session.objects.get(pk=waiting.pk).state == "failed"


def test_command_sweep_sends_a_command_a_refused_send_left_pending(alice, template, docker_agent, settings):
    """A command whose send the channel layer refused (Redis down or failing over) is back in
    ``pending``; the sweep sends it once it is older than the ack timeout."""
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    AgentInstance.objects.filter(agent=docker_agent).update(channel_name=channel)
    session = make_session(alice, template, docker_agent, state="starting")
    command = AgentCommand.objects.create(agent=docker_agent, session=session, action="start_session")
    settings.AGENT_COMMAND_ACK_TIMEOUT_S = 30
    agent_tasks.command_sweep()
    assert AgentCommand.objects.get(pk=command.pk).state == "pending"  # younger than the timeout
    AgentCommand.objects.filter(pk=command.pk).update(created_at=timezone.now() - timedelta(seconds=60))
    agent_tasks.command_sweep()
    assert AgentCommand.objects.get(pk=command.pk).state == "sent"
    message = async_to_sync(layer.receive)(channel)
    assert message["payload"]["command_id"] == str(command.pk)


def test_stuck_sweep_task(alice, template, docker_agent, settings):
    """A session left in a transition past the limit fails with the reason; a fresh one stays."""
    stuck = make_session(alice, template, docker_agent, state="starting", idle_for_s=3600)
    fresh = make_session(alice, template, docker_agent, state="stopping", idle_for_s=0)
    Session.objects.filter(pk=stuck.pk).update(state_changed_at=timezone.now() - timedelta(hours=1))
    Session.objects.filter(pk=fresh.pk).update(state_changed_at=timezone.now())
    settings.STREAMSPACE_STUCK_SESSION_S = 600
    assert session_tasks.stuck_sweep() == 1
    stuck.refresh_from_db()
    assert stuck.state == "failed" and "Stuck in starting" in stuck.status_message
    assert Session.objects.get(pk=fresh.pk).state == "stopping"
    assert session_tasks.stuck_sweep() == 0


def test_stale_agent_sweep_task(docker_agent):
    AgentInstance.objects.create(
        agent=docker_agent,
        instance_id="gone",
        connected=True,
        is_leader=True,
        last_heartbeat=timezone.now() - timedelta(minutes=10),
    )
    assert agent_tasks.stale_agent_sweep() == 1
    assert not AgentInstance.objects.get(instance_id="gone").connected


def test_run_jobs_once(alice, template, docker_agent, capsys, settings):
    idle = make_session(alice, template, docker_agent, idle_timeout_s=5, idle_for_s=60)
    call_command("run_jobs", "--once")
    out = capsys.readouterr().out
    assert "idle-sweep: {'hibernated': 1, 'stopped': 0}" in out
    assert set(line.split(":")[0] for line in out.splitlines()) == set(settings.STREAMSPACE_PERIODIC_JOBS)
    assert Session.objects.get(pk=idle.pk).state == "hibernating"


def test_the_audit_prune_job_deletes_events_past_the_retention(settings, capsys):
    settings.AUDIT_RETENTION_DAYS = 30
    old = AuditEvent.objects.create(action="test.old")
    AuditEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=31))
    kept = AuditEvent.objects.create(action="test.new")
    call_command("run_jobs", "--once", "--job", "audit-prune")
    assert capsys.readouterr().out.strip() == "audit-prune: 1"
    assert list(AuditEvent.objects.values_list("pk", flat=True)) == [kept.pk]


def test_run_jobs_rejects_unknown_job():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="unknown job"):
        call_command("run_jobs", "--once", "--job", "nope")


def test_run_forever_follows_the_intervals(settings, monkeypatch):
    settings.STREAMSPACE_PERIODIC_JOBS = {"fast": ("t.fast", 1), "slow": ("t.slow", 10)}
    calls: list[tuple[str, float]] = []
    now = [0.0]
    stop = threading.Event()

    def fake_run(job):
        calls.append((job.name, job.next_run - job.interval_s))  # when the runner started it
        if len(calls) >= 5:
            stop.set()

    monkeypatch.setattr(jobs, "_run_in_thread", fake_run)

    class Clock:
        def __call__(self):
            now[0] += 0.5
            return now[0]

    jobs.run_forever(stop, clock=Clock(), tick_s=0.001)
    fast = [t for name, t in calls if name == "fast"]
    assert [name for name, _ in calls].count("slow") == 1
    assert len(fast) >= 3 and all(b - a >= 1 for a, b in zip(fast, fast[1:], strict=False))

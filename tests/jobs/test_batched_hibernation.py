"""The idle sweep hibernates in chunks: one transaction, one UPDATE and one INSERT of audit
events and of commands per chunk, one send per agent leader. Every session must still get
its own audit event, its own command frame and its own broadcast, and one bad row must not
stop the others."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from agents_app import dispatch
from agents_app.models import AgentCommand, AgentInstance
from sessions_app import services, sweeps
from sessions_app.models import Session
from sessions_app.notify import user_group
from sessions_app.state import IllegalTransition, transition_many
from streamspace.audit.models import AuditEvent
from tests.support.factories import bulk_sessions, make_leader, make_session

pytestmark = pytest.mark.django_db


@pytest.fixture
def layer():
    return get_channel_layer()


@pytest.fixture
def leader(docker_agent, layer) -> AgentInstance:
    """The agent's connected leader; its channel is read by the test instead of a consumer."""
    return make_leader(docker_agent, channel_name=async_to_sync(layer.new_channel)())


def drain(layer: Any, channel: str) -> list[dict[str, Any]]:
    """Every message waiting on ``channel`` (the layer answers at once while some are queued)."""

    async def take() -> list[dict[str, Any]]:
        import asyncio

        messages = []
        while True:
            try:
                messages.append(await asyncio.wait_for(layer.receive(channel), 0.5))
            except TimeoutError:
                return messages

    return async_to_sync(take)()


def test_each_session_gets_its_own_audit_event_command_and_broadcast(
    alice, bob, template, docker_agent, leader, layer, django_capture_on_commit_callbacks
):
    sessions = [make_session(user, template, docker_agent, idle_timeout_s=60, idle_for_s=120) for user in (alice, bob)]
    sessions.append(make_session(alice, template, docker_agent, idle_timeout_s=60, idle_for_s=90))
    watchers = {}
    for user in (alice, bob):
        watchers[user.pk] = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)(user_group(user.pk), watchers[user.pk])

    with django_capture_on_commit_callbacks(execute=True):
        done = sweeps.hibernate_idle_sessions()

    assert sorted(done) == sorted(str(s.pk) for s in sessions)
    assert set(Session.objects.filter(pk__in=done).values_list("state", flat=True)) == {"hibernating"}
    audits = AuditEvent.objects.filter(action="session.hibernate")
    assert sorted(audits.values_list("target_id", flat=True)) == sorted(done)
    assert all(a.details == {"reason": "idle"} and a.actor_repr == "system" for a in audits)
    commands = AgentCommand.objects.filter(action="hibernate_session")
    assert sorted(str(c.session_id) for c in commands) == sorted(done)
    assert {(c.state, c.attempts, c.instance_id) for c in commands} == {("sent", 1, "leader-1")}

    frames = drain(layer, leader.channel_name)
    assert sorted(f["payload"]["command_id"] for f in frames) == sorted(str(c.pk) for c in commands)
    assert {(f["payload"]["action"], f["payload"]["attempt"]) for f in frames} == {("hibernate_session", 1)}
    for user, expected in ((alice, 2), (bob, 1)):
        updates = drain(layer, watchers[user.pk])
        assert len(updates) == expected
        assert {u["session"]["state"] for u in updates} == {"hibernating"}
        assert {u["session"]["user"] for u in updates} == {user.username}


def test_a_bad_session_stops_only_itself(alice, template, docker_agent, monkeypatch):
    good = [make_session(alice, template, docker_agent, idle_timeout_s=60, idle_for_s=120) for _ in range(3)]
    bad = make_session(alice, template, docker_agent, idle_timeout_s=60, idle_for_s=100)
    real = services.hibernate_claimed

    def refuse_the_bad_one(sessions, **kwargs):
        if any(s.pk == bad.pk for s in sessions):
            raise RuntimeError("this row cannot be hibernated")
        return real(sessions, **kwargs)

    monkeypatch.setattr(services, "hibernate_claimed", refuse_the_bad_one)
    done = sweeps.hibernate_idle_sessions()
    assert sorted(done) == sorted(str(s.pk) for s in good)
    assert Session.objects.get(pk=bad.pk).state == "running"
    assert not AgentCommand.objects.filter(session=bad).exists()
    assert not AuditEvent.objects.filter(target_id=str(bad.pk)).exists()


def test_chunks_bound_the_transactions(alice, template, docker_agent, monkeypatch):
    monkeypatch.setattr(sweeps, "IDLE_CLAIM_CHUNK", 4)
    bulk_sessions(alice, template, docker_agent, 10, idle_for_s=3600, idle_timeout_s=60)
    sizes = []
    real = services.hibernate_claimed
    monkeypatch.setattr(
        services, "hibernate_claimed", lambda sessions, **kw: sizes.append(len(sessions)) or real(sessions, **kw)
    )
    assert len(sweeps.hibernate_idle_sessions()) == 10
    assert sizes == [4, 4, 2]


def test_transition_many_is_all_or_nothing(alice, template, docker_agent):
    first = make_session(alice, template, docker_agent)
    second = make_session(alice, template, docker_agent)
    Session.objects.filter(pk=second.pk).update(state="stopping")  # changed behind the caller's back
    with pytest.raises(IllegalTransition), transaction.atomic():
        transition_many([first, second], "hibernating")
    assert Session.objects.get(pk=first.pk).state == "running"

    second.refresh_from_db()
    with pytest.raises(IllegalTransition):
        transition_many([first, second], "hibernating")  # not in one state: refused before writing
    stopped = make_session(alice, template, docker_agent, state="stopped")
    with pytest.raises(IllegalTransition):
        transition_many([stopped], "hibernating")


def test_hibernating_one_session_through_the_api_path_is_unchanged(alice, template, docker_agent):
    session = make_session(alice, template, docker_agent)
    services.hibernate_session(session, actor=alice)
    session.refresh_from_db()
    assert (session.state, session.status_message, session.streaming_ready) == ("hibernating", "Hibernating", False)
    audit = AuditEvent.objects.get(action="session.hibernate", target_id=str(session.pk))
    assert audit.actor == alice and audit.details == {"reason": "user"}
    assert services.hibernate_session(session).state == "hibernating"  # idempotent
    assert AgentCommand.objects.filter(session=session, action="hibernate_session").count() == 1
    with pytest.raises(IllegalTransition):
        services.hibernate_session(make_session(alice, template, docker_agent, state="stopping"))


def test_pending_commands_go_out_once_in_order(alice, template, docker_agent, leader, layer):
    sessions = [make_session(alice, template, docker_agent) for _ in range(3)]
    with transaction.atomic():  # on_commit does not run in the test's transaction: send by hand below
        for session in sessions:
            services.hibernate_session(session)
    created = list(AgentCommand.objects.order_by("created_at").values_list("pk", flat=True))
    with CaptureQueriesContext(connection) as queries:
        assert dispatch.send_pending_commands(docker_agent.pk) == 3
    # Not one per command: the leader, the superseded expiry and the claim (on SQLite a
    # savepoint around a locked read and an UPDATE).
    assert len(queries) <= 6, [q["sql"] for q in queries.captured_queries]
    assert dispatch.send_pending_commands(docker_agent.pk) == 0
    frames = drain(layer, leader.channel_name)
    assert [f["payload"]["command_id"] for f in frames] == [str(pk) for pk in created]


def test_a_refused_frame_puts_its_command_back(alice, template, docker_agent, leader, layer, monkeypatch):
    for _ in range(3):
        services.hibernate_session(make_session(alice, template, docker_agent))
    second = list(AgentCommand.objects.order_by("created_at"))[1]
    real_send = layer.send

    async def refuse_second(channel, message):
        if message["payload"]["command_id"] == str(second.pk):
            raise RuntimeError("channel full")
        await real_send(channel, message)

    monkeypatch.setattr(layer, "send", refuse_second)
    assert dispatch.send_pending_commands(docker_agent.pk) == 2
    states = dict(AgentCommand.objects.values_list("pk", "state"))
    assert states.pop(second.pk) == "pending"
    assert set(states.values()) == {"sent"}
    monkeypatch.setattr(layer, "send", real_send)
    assert dispatch.send_pending_commands(docker_agent.pk) == 1  # the next send takes it again
    assert AgentCommand.objects.get(pk=second.pk).attempts == 2

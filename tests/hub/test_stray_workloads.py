"""A workload reported running for a session held as stopped, failed or hibernated (a deposed
agent leader's launch that reached the platform after its last mandate check) is brought back
to the session's state by a queued command, audited; the session never moves back
(sessions_app/stray_workloads.py, docs/architecture.md §6.4)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from agents_app.models import AgentCommand, CommandState
from sessions_app.models import Session
from streamspace.audit.models import AuditEvent
from tests.support.factories import make_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

RUNNING = {"state": "running", "streaming_ready": True, "streaming_port": 8080}


def commands_of(session) -> list[tuple[str, str]]:
    return list(AgentCommand.objects.filter(session=session).order_by("created_at").values_list("action", "state"))


async def barrier(client) -> None:
    """Every frame sent before this one has been processed (the hub answers an unknown session)."""
    await client.send("session_status", session_id="barrier", state="running")
    assert (await client.recv_type("error"))["code"] == "unknown_session"


@pytest.mark.parametrize(
    "state,action", [("stopped", "stop_session"), ("failed", "stop_session"), ("hibernated", "hibernate_session")]
)
async def test_a_status_of_a_running_workload_queues_the_correction(
    make_client, hub_agent, alice, template, state, action
):
    agent, _ = hub_agent
    client = make_client()
    await client.register()  # first: its (empty) inventory would fail a hibernated session
    session = await database_sync_to_async(make_session)(alice, template, agent, state=state)
    await client.send("session_status", session_id=str(session.pk), **RUNNING)
    command = await client.recv_type("command")
    assert (command["action"], command["session_id"]) == (action, str(session.pk))
    if action == "stop_session":
        assert command["spec"]["delete_home"] is False
    # Reported again while the correction runs: no second command.
    await client.send("ack", command_id=command["command_id"])
    await client.send("session_status", session_id=str(session.pk), **RUNNING)
    await barrier(client)
    assert await database_sync_to_async(commands_of)(session) == [(action, CommandState.ACKED)]
    assert (await database_sync_to_async(Session.objects.get)(pk=session.pk)).state == state
    event = await database_sync_to_async(AuditEvent.objects.get)(action="session.stray_workload")
    assert event.target_id == str(session.pk) and event.details["command"] == action
    assert event.details["state"] == state and event.actor_repr == f"agent:{agent.agent_id}"
    # The correction's result leaves the session where it is; the workload's new state too.
    await client.send("result", command_id=command["command_id"], ok=True)
    reported = "stopped" if action == "stop_session" else "hibernated"
    await client.send("session_status", session_id=str(session.pk), state=reported)
    await barrier(client)
    assert (await database_sync_to_async(Session.objects.get)(pk=session.pk)).state == state
    assert await database_sync_to_async(commands_of)(session) == [(action, CommandState.SUCCEEDED)]


async def test_an_inventory_with_a_running_workload_of_a_stopped_session_queues_a_stop(
    make_client, hub_agent, alice, template
):
    agent, _ = hub_agent
    stopped = await database_sync_to_async(make_session)(alice, template, agent, state="stopped")
    asleep = await database_sync_to_async(make_session)(alice, template, agent, state="hibernated")
    exited = await database_sync_to_async(make_session)(alice, template, agent, state="stopped")
    client = make_client()
    inventory = [
        {"session_id": str(stopped.pk), **RUNNING},
        {"session_id": str(asleep.pk), **RUNNING},
        {"session_id": str(exited.pk), "state": "hibernated"},  # not running: only audited
    ]
    await client.register(sessions=inventory)
    received = {(await client.recv_type("command"))["session_id"] for _ in range(2)}
    assert received == {str(stopped.pk), str(asleep.pk)}
    await barrier(client)
    assert await database_sync_to_async(commands_of)(stopped) == [("stop_session", CommandState.SENT)]
    assert await database_sync_to_async(commands_of)(asleep) == [("hibernate_session", CommandState.SENT)]
    assert await database_sync_to_async(commands_of)(exited) == []
    states = await database_sync_to_async(
        lambda: {s.pk: s.state for s in Session.objects.filter(pk__in=[stopped.pk, asleep.pk])}
    )()
    assert states == {stopped.pk: "stopped", asleep.pk: "hibernated"}
    unknown = await database_sync_to_async(AuditEvent.objects.get)(action="agent.unknown_sessions")
    assert unknown.details["session_ids"] == [str(exited.pk)]


async def test_a_running_report_of_a_session_stopping_or_waking_queues_nothing(make_client, hub_agent, alice, template):
    agent, _ = hub_agent
    client = make_client()
    await client.register()
    stopping = await database_sync_to_async(make_session)(alice, template, agent, state="stopping")
    running = await database_sync_to_async(make_session)(alice, template, agent, state="running")
    for session in (stopping, running):
        await client.send("session_status", session_id=str(session.pk), **RUNNING)
    await barrier(client)
    assert await database_sync_to_async(lambda: AgentCommand.objects.filter(agent=agent).count())() == 0

"""A ``result`` lost in transit (the replica holding the leader's socket died between the ack
and the result): when the instance that acked the command registers again as leader, the
command is sent to it again, and it answers from its memory of command ids (the stored
result) instead of running it twice (docs/architecture.md §6.3).

The scripted agent here plays that instance: it acks, its socket goes away before the
result, and it answers the second delivery with the result it kept, as
``agent_runtime/commands.py`` does (``tests/agent/test_connection.py::test_duplicates_run_once``)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from agents_app.dispatch import SUPERSEDED
from agents_app.models import AgentCommand, CommandState
from sessions_app.models import Session, SessionState
from tests.hub.conftest import launch

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def get(model, **filters):
    return database_sync_to_async(lambda: model.objects.get(**filters))()


async def barrier(client) -> None:
    """Every frame the client sent before is processed (the hub answers unknown sessions)."""
    await client.send("session_status", session_id="barrier", state="running")
    assert (await client.recv_type("error"))["code"] == "unknown_session"


async def acked_then_lost(make_client, alice, template, instance_id: str = "i-1"):
    """A leader acks a start, then its socket goes away before the result: (session, command id)."""
    client = make_client(instance_id)
    await client.register()
    session = await launch(alice, template)
    command = await client.recv_type("command")
    await client.send("ack", command_id=command["command_id"])
    await barrier(client)
    await client.close()
    assert (await get(AgentCommand, pk=command["command_id"])).state == CommandState.ACKED
    return session, command["command_id"]


async def test_a_failed_start_whose_result_was_lost_reaches_the_session(make_client, alice, template):
    session, command_id = await acked_then_lost(make_client, alice, template)
    # The start failed on the agent and its result died with the socket: no workload, so the
    # inventory has nothing to say, and the session would wait for the command to expire.
    again = make_client("i-1")
    await again.register(sessions=[])
    resent = await again.recv_type("command")
    assert resent["command_id"] == command_id and resent["attempt"] == 2
    await again.send("result", command_id=command_id, ok=False, error="image not found")
    await barrier(again)
    stored = await get(Session, pk=session.pk)
    assert stored.state == SessionState.FAILED and "image not found" in stored.status_message
    assert (await get(AgentCommand, pk=command_id)).state == CommandState.FAILED


async def test_a_start_whose_result_was_lost_is_completed_not_left_acked(make_client, alice, template):
    session, command_id = await acked_then_lost(make_client, alice, template)
    again = make_client("i-1")
    running = {"session_id": str(session.pk), "state": "running", "streaming_ready": True, "streaming_port": 8080}
    await again.register(sessions=[running])
    resent = await again.recv_type("command")
    assert resent["command_id"] == command_id
    await again.send("result", command_id=command_id, ok=True)
    await barrier(again)
    assert (await get(Session, pk=session.pk)).state == SessionState.RUNNING
    done = await get(AgentCommand, pk=command_id)
    assert done.state == CommandState.SUCCEEDED and done.error == ""


async def test_only_the_instance_that_acked_is_asked_and_only_as_leader(make_client, alice, template):
    _, command_id = await acked_then_lost(make_client, alice, template)
    # Another instance leading now never gets it: the one that acked may still be running it.
    other = make_client("i-2")
    await other.register()
    await barrier(other)
    assert await other.nothing(0.3)
    await other.close()
    # The instance that acked it, back as a follower, is not asked either.
    follower = make_client("i-1")
    await follower.register(is_leader=False)
    await barrier(follower)
    assert await follower.nothing(0.3)
    assert (await get(AgentCommand, pk=command_id)).state == CommandState.ACKED


async def test_an_acked_command_overtaken_by_a_later_one_is_not_sent_again(make_client, alice, template):
    from sessions_app.services import stop_session

    session, command_id = await acked_then_lost(make_client, alice, template)
    # Another instance leads meanwhile and runs the user's stop.
    other = make_client("i-2")
    await other.register()
    await database_sync_to_async(stop_session)(session)
    stop = await other.recv_type("command")
    assert stop["action"] == "stop_session"
    await other.send("result", command_id=stop["command_id"], ok=True)
    await barrier(other)
    await other.close()
    # The instance that acked the start leads again: the start must not go out after the stop.
    again = make_client("i-1")
    await again.register(sessions=[])
    await barrier(again)
    assert await again.nothing(0.3)
    start = await get(AgentCommand, pk=command_id)
    assert start.state == CommandState.EXPIRED and start.error == SUPERSEDED
    assert (await get(Session, pk=session.pk)).state == SessionState.STOPPED

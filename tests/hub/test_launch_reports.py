"""Launch progress and failure reports through the hub: what an agent says besides a state
(steps with durations, exit status, output tail) is stored on the session, bounded and
masked, and reaches the owner's portal sockets with the session object."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from agent_runtime import protocol
from agent_runtime.commands import CommandExecutor
from sessions_app import notify
from sessions_app.models import Session, SessionLog, SessionState
from streamspace import events
from tests.hub.conftest import launch
from tests.support.factories import make_session
from tests.support.fakes import SteppingBackend

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def get(model, **filters):
    return database_sync_to_async(lambda: model.objects.get(**filters))()


class PortalWatcher:
    """The owner's portal group, as a browser socket receives it."""

    def __init__(self, user_id) -> None:
        self.group = notify.user_group(user_id)
        self.layer = get_channel_layer()
        self.channel = ""

    async def __aenter__(self) -> PortalWatcher:
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.layer.group_discard(self.group, self.channel)

    async def next(self, timeout: float = 5) -> dict:
        return (await asyncio.wait_for(self.layer.receive(self.channel), timeout))["session"]

    async def until(self, predicate, timeout: float = 10) -> list[dict]:
        """Every session object received until one satisfies ``predicate``."""
        seen = []
        while True:
            seen.append(await self.next(timeout))
            if predicate(seen[-1]):
                return seen


async def barrier(client) -> None:
    """Every frame sent before is applied: the hub answers an unknown session after them."""
    await client.send("session_status", session_id="barrier", state="running")
    while (await client.recv())["type"] != "error":
        pass


async def test_progress_steps_arrive_in_order_with_durations(make_client, alice, template):
    """The real command executor, over the real hub: its steps reach the session and the portal."""
    client = make_client()
    await client.register()
    backend = SteppingBackend(pull_s=0.3, ready_after=0.6)

    async def send(payload: protocol.Payload) -> None:
        await client.send_raw(protocol.encode(payload))

    executor = CommandExecutor(backend, send, is_leader=lambda: True)
    backend.listen(executor)
    async with PortalWatcher(alice.pk) as portal:
        session = await launch(alice, template)
        assert (await portal.next())["state"] == "pending"
        command = await client.recv_type("command")
        await executor.submit(protocol.Command(**command))
        seen = await portal.until(lambda body: body["streaming_ready"])
    await executor.drain(5)

    final = seen[-1]["progress"]
    assert [(s["step"], s["state"]) for s in final] == [
        ("image", "done"),
        ("workload", "done"),
        ("stream", "done"),
        ("ready", "done"),
    ]
    assert final[0]["label"] == f"Pulled image {template.image}" and final[0]["duration_s"] >= 0.3
    assert final[2]["duration_s"] >= 0.3  # waited for the stream until the backend answered
    assert [s["at_s"] for s in final] == sorted(s["at_s"] for s in final)
    # every broadcast carried the steps so far: each list extends the one before
    names = [[s["step"] for s in body["progress"]] for body in seen]
    assert names[0] == ["image"] and seen[0]["state"] == "starting" and seen[0]["progress"][0]["state"] == "active"
    for before, after in zip(names, names[1:], strict=False):
        assert after[: len(before)] == before
    assert seen[-1]["state"] == "running"
    stored = await get(Session, pk=session.pk)
    assert stored.launch_progress == final and stored.exit_code is None


async def test_a_failure_report_stores_exit_code_output_and_steps(make_client, alice, template):
    client = make_client()
    await client.register()
    fired: list[str] = []
    events.subscribe(on_event := lambda envelope: fired.append(envelope["event"]))
    try:
        async with PortalWatcher(alice.pk) as portal:
            session = await launch(alice, template)
            await portal.next()
            command = await client.recv_type("command")
            await client.send("ack", command_id=command["command_id"])
            await client.send(
                "session_status",
                session_id=str(session.pk),
                state="failed",
                message="The container exited with code 3 before the session was ready.",
                exit_code=3,
                log_tail="booting\nMARKER-hub-1\nAGENT_TOKEN=abc123abc123 password=hunter2",
                progress=[
                    {"step": "image", "label": "Image x is present", "state": "done", "at_s": 0, "duration_s": 0.01},
                    {"step": "workload", "label": "It died", "state": "failed", "at_s": 0.01, "duration_s": 0.5},
                ],
            )
            body = await portal.next()
        await barrier(client)
    finally:
        events.unsubscribe(on_event)
    assert body["state"] == "failed" and body["exit_code"] == 3
    assert [s["state"] for s in body["progress"]] == ["done", "failed"]
    stored = await get(Session, pk=session.pk)
    assert stored.state == SessionState.FAILED and stored.exit_code == 3
    assert stored.status_message == "The container exited with code 3 before the session was ready."
    log = await get(SessionLog, session_id=session.pk)
    assert "MARKER-hub-1" in log.text and "abc123abc123" not in log.text and "hunter2" not in log.text
    assert not log.truncated
    assert fired.count("session.failed") == 1


async def test_old_agents_frames_keep_what_was_reported(make_client, alice, template):
    """Frames without the optional fields (an older agent) change states only."""
    client = make_client()
    await client.register()
    session = await launch(alice, template)
    await client.recv_type("command")
    step = {"step": "workload", "label": "Creating", "state": "active", "at_s": 0.0, "duration_s": None}
    await client.send("session_status", session_id=str(session.pk), state="starting", progress=[step])
    await client.send("session_status", session_id=str(session.pk), state="running", streaming_ready=True)
    await client.send("session_status", session_id=str(session.pk), state="failed", message="gone")
    await barrier(client)
    stored = await get(Session, pk=session.pk)
    assert stored.state == SessionState.FAILED and stored.launch_progress == [step] and stored.exit_code is None
    assert not await database_sync_to_async(SessionLog.objects.filter(session_id=session.pk).exists)()


async def test_a_progress_step_alone_reaches_the_portal_without_an_event(make_client, alice, template):
    client = make_client()
    await client.register()
    session = await launch(alice, template)
    await client.recv_type("command")
    first = {"step": "image", "label": "Pulling image x", "state": "active", "at_s": 0.0, "duration_s": None}
    await client.send("session_status", session_id=str(session.pk), state="starting", progress=[first])
    await barrier(client)
    fired: list[str] = []
    events.subscribe(on_event := lambda envelope: fired.append(envelope["event"]))
    try:
        async with PortalWatcher(alice.pk) as portal:
            done = {**first, "label": "Pulled image x", "state": "done", "duration_s": 4.2}
            await client.send("session_status", session_id=str(session.pk), state="starting", progress=[done])
            # (the broadcast of the first frame's state change may still be on its way)
            body = (await portal.until(lambda body: body["progress"] == [done]))[-1]
            # the same steps again change nothing, and nothing is sent for them
            await client.send("session_status", session_id=str(session.pk), state="starting", progress=[done])
            then = {"step": "workload", "label": "Creating", "state": "active", "at_s": 4.2, "duration_s": None}
            await client.send("session_status", session_id=str(session.pk), state="starting", progress=[done, then])
            assert (await portal.next())["progress"] == [done, then]
    finally:
        events.unsubscribe(on_event)
    assert body["state"] == "starting" and body["progress"] == [done]
    assert fired == []


async def test_what_an_agent_reports_is_bounded(make_client, alice, template):
    client = make_client()
    await client.register()
    session = await launch(alice, template)
    await client.recv_type("command")
    steps = [
        {"step": f"s{i}" + "x" * 100, "label": "L" * 1000, "state": "exploded", "at_s": i, "duration_s": 1}
        for i in range(50)
    ]
    tail = "".join(f"line {i} " + "y" * 90 + "\n" for i in range(2000))  # ~200 KB, under the frame limit
    await client.send(
        "session_status", session_id=str(session.pk), state="failed", exit_code=1, log_tail=tail, progress=steps
    )
    await barrier(client)
    stored = await get(Session, pk=session.pk)
    assert len(stored.launch_progress) == protocol.PROGRESS_MAX_STEPS
    assert stored.launch_progress[-1]["at_s"] == 49  # the last steps are kept
    assert all(len(s["step"]) <= 32 and len(s["label"]) <= 200 and s["state"] == "done" for s in stored.launch_progress)
    log = await get(SessionLog, session_id=session.pk)
    assert len(log.text) <= 8192 and log.truncated and log.text.startswith("line ") and "line 1999 " in log.text


async def test_a_running_session_whose_workload_stopped_on_its_own_fails(make_client, hub_agent, alice, template):
    """A container that exited looks hibernated; only a hibernation the control plane asked for is one."""
    agent, _ = hub_agent
    running = await database_sync_to_async(make_session)(alice, template, agent, state="running")
    sleeping = await database_sync_to_async(make_session)(alice, template, agent, state="hibernating")
    client = make_client()
    await client.register(sessions=[{"session_id": str(running.pk), "state": "running", "streaming_ready": True}])
    assert (await get(Session, pk=running.pk)).state == SessionState.RUNNING
    await client.send("session_status", session_id=str(running.pk), state="hibernated", exit_code=137)
    await client.send("session_status", session_id=str(sleeping.pk), state="hibernated", exit_code=0)
    await barrier(client)
    crashed = await get(Session, pk=running.pk)
    assert crashed.state == SessionState.FAILED and crashed.exit_code == 137
    assert crashed.status_message == "The session's workload stopped on its own (exit code 137)."
    slept = await get(Session, pk=sleeping.pk)
    assert slept.state == SessionState.HIBERNATED and slept.exit_code is None


async def test_inventory_of_a_restarted_agent_fails_a_crashed_session(make_client, hub_agent, alice, template):
    agent, _ = hub_agent
    crashed = await database_sync_to_async(make_session)(alice, template, agent, state="running")
    dead = await database_sync_to_async(make_session)(alice, template, agent, state="running")
    asleep = await database_sync_to_async(make_session)(alice, template, agent, state="hibernated")
    inventory = [
        {"session_id": str(crashed.pk), "state": "hibernated", "exit_code": 2},
        {"session_id": str(dead.pk), "state": "failed", "exit_code": 9},
        {"session_id": str(asleep.pk), "state": "hibernated", "exit_code": 143},
    ]
    client = make_client()
    await client.register(sessions=inventory)
    await barrier(client)
    rows = await database_sync_to_async(
        lambda: {s.pk: (s.state, s.exit_code) for s in Session.objects.filter(agent=agent)}
    )()
    assert rows[crashed.pk] == ("failed", 2) and rows[dead.pk] == ("failed", 9)
    assert rows[asleep.pk] == ("hibernated", None)


async def test_reports_for_unknown_sessions_are_refused(make_client, alice, template):
    client = make_client()
    await client.register()
    await client.send("session_status", session_id=str(uuid.uuid4()), state="failed", exit_code=1, log_tail="x")
    assert (await client.recv_type("error"))["code"] == "unknown_session"
    assert not await database_sync_to_async(SessionLog.objects.exists)()

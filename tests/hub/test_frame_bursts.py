"""The hub applies an agent's acks, results and statuses in bursts (agents_app/hub/frames.py):
what queued up while one call ran goes in the next, in order; a frame that fails costs only
itself; the connection forwards commands while frames are being applied."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from agent_runtime import protocol
from agents_app.dispatch import COMMAND_MESSAGE_TYPE
from agents_app.hub import frames
from agents_app.models import AgentCommand, AgentInstance, CommandState
from sessions_app.models import Session, SessionState
from tests.hub.conftest import launch
from tests.support.agent_client import frame
from tests.support.factories import make_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def get(model, **filters):
    return database_sync_to_async(lambda: model.objects.get(**filters))()


class HeldFirstCall:
    """Wraps :func:`frames.apply`: records each call's frame types; the first call waits
    until :meth:`release` (so that the frames sent meanwhile queue up behind it)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        real = frames.apply

        def apply(agent, batch):
            self.calls.append([f.type for f in batch])
            if len(self.calls) == 1:
                self.entered.set()
                assert self.gate.wait(10), "the test never released the first call"
            return real(agent, batch)

        monkeypatch.setattr(frames, "apply", apply)

    def release(self) -> None:
        self.gate.set()


async def _two_launches(client, alice, template):
    sessions, commands = [], []
    for _ in range(2):
        sessions.append(await launch(alice, template))
        commands.append(await client.recv_type("command"))
    return sessions, commands


async def test_frames_sent_while_one_is_applied_go_together_in_order(make_client, alice, template, monkeypatch):
    client = make_client()
    await client.register()
    (one, two), (c1, c2) = await _two_launches(client, alice, template)
    held = HeldFirstCall(monkeypatch)
    await client.send("ack", command_id=c1["command_id"])
    assert await asyncio.to_thread(held.entered.wait, 5)
    await client.send("ack", command_id=c2["command_id"])
    await client.send("result", command_id=c1["command_id"], ok=True)
    await client.send("session_status", session_id=str(one.pk), state="running", streaming_ready=True)
    await client.send("session_status", session_id="not-a-session", state="running")
    await client.send("result", command_id=c2["command_id"], ok=True)
    await client.send("session_status", session_id=str(two.pk), state="running", streaming_ready=True)
    await client.send("result", command_id=str(uuid.uuid4()), ok=True)
    # A frame answered inline: once its error arrives, every frame above has been read (and queued).
    await client.send_raw("{not json")
    assert (await client.recv_type("error"))["code"] == "bad_frame"
    held.release()
    assert (await client.recv_type("error"))["code"] == "unknown_session"
    assert (await client.recv_type("error"))["code"] == "unknown_command"
    assert held.calls == [
        ["ack"],
        ["ack", "result", "session_status", "session_status", "result", "session_status", "result"],
    ]
    for session, command in ((one, c1), (two, c2)):
        stored = await get(Session, pk=session.pk)
        assert stored.state == SessionState.RUNNING and stored.streaming_ready
        done = await get(AgentCommand, pk=command["command_id"])
        assert done.state == CommandState.SUCCEEDED and done.acked_at is not None


async def test_commands_are_forwarded_while_frames_are_being_applied(make_client, hub_agent, monkeypatch):
    agent, _ = hub_agent
    client = make_client()
    await client.register()
    channel = (await get(AgentInstance, agent=agent, instance_id="i-1")).channel_name
    held = HeldFirstCall(monkeypatch)
    await client.send("ack", command_id=str(uuid.uuid4()))
    assert await asyncio.to_thread(held.entered.wait, 5)
    payload = {"command_id": str(uuid.uuid4()), "action": "stop_session", "session_id": "", "spec": {}, "attempt": 1}
    await get_channel_layer().send(channel, {"type": COMMAND_MESSAGE_TYPE, "payload": payload})
    try:
        assert (await client.recv_type("command"))["command_id"] == payload["command_id"]
    finally:
        held.release()
    await client.send("session_status", session_id="barrier", state="running")
    assert (await client.recv_type("error"))["code"] == "unknown_session"


async def test_frames_sent_before_a_disconnect_are_applied(make_client, alice, template, monkeypatch):
    client = make_client()
    await client.register()
    (one, _), (c1, _) = await _two_launches(client, alice, template)
    held = HeldFirstCall(monkeypatch)
    await client.send("ack", command_id=c1["command_id"])
    assert await asyncio.to_thread(held.entered.wait, 5)
    await client.send("result", command_id=c1["command_id"], ok=True)
    await client.send("session_status", session_id=str(one.pk), state="running", streaming_ready=True)
    await client.send_raw("{not json")
    assert (await client.recv_type("error"))["code"] == "bad_frame"
    held.release()
    await client.close()
    assert (await get(Session, pk=one.pk)).state == SessionState.RUNNING
    assert (await get(AgentCommand, pk=c1["command_id"])).state == CommandState.SUCCEEDED


def _decoded(type_: str, **payload) -> protocol.Frame:
    return protocol.decode(frame(type_, **payload), protocol.AGENT_MESSAGES)


async def test_a_frame_that_breaks_the_batch_costs_only_itself(hub_agent, alice, template, monkeypatch):
    agent, _ = hub_agent

    def scenario():
        first = make_session(alice, template, agent, state="pending")
        second = make_session(alice, template, agent, state="pending")
        real = frames.rows.complete

        def exploding(agent, result):
            if result.command_id == "explode":
                raise RuntimeError("boom")
            return real(agent, result)

        monkeypatch.setattr(frames.rows, "complete", exploding)
        batch = [
            _decoded("session_status", session_id=str(first.pk), state="running", streaming_ready=True),
            _decoded("result", command_id="explode", ok=True),
            _decoded("session_status", session_id=str(second.pk), state="running", streaming_ready=True),
        ]
        replies = frames.apply(agent, batch)
        assert [(r.code, r.reply_to) for r in replies] == [("internal_error", batch[1].id)]
        for session in (first, second):
            session.refresh_from_db()
            assert session.state == SessionState.RUNNING and session.streaming_ready

    await database_sync_to_async(scenario)()

"""A leader paused in the middle of a command (SIGSTOP) resumes after another replica took over
and changed the session's workload: it answers the command's result but says nothing about
the session (agent_runtime/commands.py, "Only the leader reports"). Found by the chaos suite
(tests/chaos/): the resumed Docker leader saw the container the new leader had hibernated
(stopped with SIGTERM), reported it dead, and the hibernated session failed."""

from __future__ import annotations

import asyncio
import uuid

from agent_runtime.backends.base import SessionSpec
from agent_runtime.commands import CommandExecutor
from agent_runtime.protocol import Command, InventoryItem, Result, SessionStatus
from tests.support.fakes import RecordingBackend
from tests.support.waits import until

SPEC = {"image": "example/session:1", "user": "alice", "template": "t", "persistent_home": False}


class PausedStartBackend(RecordingBackend):
    """``start`` creates the workload, then waits for ``resume`` before it reads its status back
    (the leader is paused there); ``stop_behind`` is what the new leader does meanwhile."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inside = asyncio.Event()
        self.resume = asyncio.Event()

    async def start(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        self.sessions[session_id] = "running"
        self.inside.set()
        await self.resume.wait()
        return await self.status(session_id)

    def stop_behind(self, session_id: str) -> None:
        self.sessions[session_id] = "hibernated"  # a hibernated container looks like an exited one


async def test_a_resumed_former_leader_answers_its_command_but_reports_nothing():
    backend = PausedStartBackend()
    leading = [True]
    frames: list = []

    async def send(frame) -> None:
        frames.append(frame)

    executor = CommandExecutor(backend, send, is_leader=lambda: leading[0], progress_delay=0.0)
    sid, cid = str(uuid.uuid4()), uuid.uuid4().hex
    await executor.submit(Command(command_id=cid, action="start_session", session_id=sid, spec=SPEC))
    await backend.inside.wait()
    before = len([f for f in frames if isinstance(f, SessionStatus)])
    # Paused past its mandate; another replica leads and hibernates the session meanwhile.
    leading[0] = False
    backend.stop_behind(sid)
    backend.resume.set()
    await until(lambda: any(isinstance(f, Result) for f in frames), what="the start's result")
    await until(lambda: not executor.busy(sid), what="the session's lane done")
    result = next(f for f in frames if isinstance(f, Result))
    assert result.command_id == cid and result.ok
    after = [f for f in frames if isinstance(f, SessionStatus)][before:]
    assert after == [], f"a replica that does not lead reported {after}"
    # Leading again, it reports what it sees, and as it is (not as a death of its own launch).
    leading[0] = True
    await executor.reconcile()
    reported = [f for f in frames if isinstance(f, SessionStatus)][before:]
    assert [(f.state, f.message) for f in reported] == [("hibernated", None)]

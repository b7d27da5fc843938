"""A leader that loses its mandate while its backend creates a session's workload undoes what
it created and answers ``not_leader`` (agent_runtime/commands.py, "A launch is fenced"). The
backend's create blocks on an event while the test takes the mandate away (no sleeps)."""

from __future__ import annotations

import asyncio
import itertools
import uuid

from agent_runtime.backends.base import MandateLost, SessionSpec
from agent_runtime.commands import CommandExecutor
from agent_runtime.protocol import Ack, Command, InventoryItem, Result, SessionStatus
from tests.support.fakes import RecordingBackend
from tests.support.waits import until

SPEC = {"image": "example/session:1", "user": "alice", "template": "t", "persistent_home": False}


class GatedCreateBackend(RecordingBackend):
    """Workloads under deterministic names (a second create of a name conflicts, as Docker's
    409); ``start`` checks the mandate before the create, blocks inside it on ``gate``, and
    checks again after it, removing only the workload its own create made."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.workloads: dict[str, str] = {}  # session id → workload id
        self.ids = (f"w{n}" for n in itertools.count())
        self.in_create = asyncio.Event()
        self.gate = asyncio.Event()

    async def start(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        self.require_mandate(session_id, "create")
        self.in_create.set()
        await self.gate.wait()  # the call is on its way to the platform
        created = None
        if session_id not in self.workloads:  # else: a conflict, the workload is not ours
            created = self.workloads[session_id] = next(self.ids)
        if not self.holds_mandate():
            if created is not None and self.workloads.get(session_id) == created:
                del self.workloads[session_id]
            raise MandateLost(f"not_leader: leadership lost during the create step of session {session_id}")
        self.sessions[session_id] = "running"
        return await self.status(session_id)


def executor_for(backend, leading: list[bool], frames: list, refused: list) -> CommandExecutor:
    async def send(frame) -> None:
        frames.append(frame)

    executor = CommandExecutor(
        backend, send, is_leader=lambda: leading[0], on_refused=lambda: refused.append(1), progress_delay=0.0
    )
    backend.listen(executor)
    return executor


async def test_a_workload_created_after_the_mandate_ended_is_removed_and_the_command_answered_not_leader():
    backend = GatedCreateBackend()
    leading, frames, refused = [True], [], []
    executor = executor_for(backend, leading, frames, refused)
    sid, cid = str(uuid.uuid4()), uuid.uuid4().hex
    command = Command(command_id=cid, action="start_session", session_id=sid, spec=SPEC)
    await executor.submit(command)
    await backend.in_create.wait()
    statuses = len([f for f in frames if isinstance(f, SessionStatus)])
    leading[0] = False  # paused inside the create past its mandate; another replica leads
    backend.gate.set()
    await until(lambda: not executor.busy(sid), what="the session's lane done")
    [result] = [f for f in frames if isinstance(f, Result)]
    assert (result.command_id, result.ok) == (cid, False)
    assert result.error.startswith("not_leader"), result.error
    assert backend.workloads == {}, "the workload this leader created after its mandate ended is left"
    assert [f for f in frames if isinstance(f, SessionStatus)][statuses:] == []
    assert refused, "the hub is not told that this replica no longer leads"
    # The command is forgotten: sent again while this replica leads again, it runs.
    leading[0] = True
    backend.in_create.clear()
    await executor.submit(command)
    await until(lambda: not executor.busy(sid), what="the command run again")
    assert [f.ok for f in frames if isinstance(f, Result)] == [False, True]
    assert backend.workloads == {sid: "w1"}


async def test_the_successors_workload_is_never_undone():
    """The successor created the session's workload while this leader's create was on its way:
    that create conflicts, and the deposed leader leaves the successor's workload alone."""
    backend = GatedCreateBackend()
    leading, frames, refused = [True], [], []
    executor = executor_for(backend, leading, frames, refused)
    sid, cid = str(uuid.uuid4()), uuid.uuid4().hex
    await executor.submit(Command(command_id=cid, action="start_session", session_id=sid, spec=SPEC))
    await backend.in_create.wait()
    leading[0] = False
    backend.workloads[sid] = "theirs"
    backend.gate.set()
    await until(lambda: not executor.busy(sid), what="the session's lane done")
    [result] = [f for f in frames if isinstance(f, Result)]
    assert not result.ok and result.error.startswith("not_leader")
    assert backend.workloads == {sid: "theirs"}


async def test_a_mandate_lost_before_the_create_creates_nothing():
    backend = GatedCreateBackend()
    leading, frames, refused = [True], [], []
    executor = executor_for(backend, leading, frames, refused)
    sid, cid = str(uuid.uuid4()), uuid.uuid4().hex
    # Acknowledged while leading; the mandate ends at the backend's first check.
    original = backend.require_mandate

    def lost_first(session_id: str, step: str) -> None:
        leading[0] = False
        original(session_id, step)

    backend.require_mandate = lost_first
    await executor.submit(Command(command_id=cid, action="start_session", session_id=sid, spec=SPEC))
    await until(lambda: not executor.busy(sid), what="the session's lane done")
    assert [type(f) for f in frames] == [Ack, Result]
    assert frames[1].error.startswith("not_leader") and not backend.in_create.is_set()
    assert backend.workloads == {}

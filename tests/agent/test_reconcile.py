"""The executor's periodic reconcile against an inventory snapshot that is older than what the
agent knows: a session started or stopped while the snapshot was being taken is neither
reported dead nor brought back to life (found by the chaos suite, tests/chaos/)."""

from __future__ import annotations

import asyncio
import uuid

from agent_runtime.commands import CommandExecutor
from agent_runtime.protocol import Command, InventoryItem, SessionStatus
from tests.support.fakes import RecordingBackend
from tests.support.waits import until

SPEC = {"image": "example/session:1", "user": "alice", "template": "t", "persistent_home": False}


class SlowInventoryBackend(RecordingBackend):
    """``inventory()`` reads the sessions at once but answers only when ``release`` is set, as a
    slow engine's container list does."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.release = asyncio.Event()
        self.release.set()

    async def inventory(self) -> list[InventoryItem]:
        snapshot = await super().inventory()
        await self.release.wait()
        return snapshot


def setup() -> tuple[SlowInventoryBackend, CommandExecutor, list]:
    backend = SlowInventoryBackend()
    frames: list = []

    async def send(frame) -> None:
        frames.append(frame)

    return backend, CommandExecutor(backend, send, is_leader=lambda: True), frames


def states(frames: list, session_id: str) -> list[str]:
    return [f.state for f in frames if isinstance(f, SessionStatus) and f.session_id == session_id]


async def command(executor: CommandExecutor, action: str, session_id: str) -> None:
    await executor.submit(Command(command_id=uuid.uuid4().hex, action=action, session_id=session_id, spec=SPEC))


async def test_a_session_started_during_the_snapshot_is_not_reported_dead():
    backend, executor, frames = setup()
    sid = str(uuid.uuid4())
    backend.release.clear()
    reconciling = asyncio.ensure_future(executor.reconcile())  # the snapshot has no sessions yet
    await asyncio.sleep(0)
    await command(executor, "start_session", sid)
    await until(lambda: not executor.busy(sid) and states(frames, sid), what="the session reported running")
    backend.release.set()
    await reconciling
    assert states(frames, sid) == ["running"]
    await executor.reconcile()  # a fresh snapshot: it is there, nothing to say
    assert states(frames, sid) == ["running"]
    backend.sessions.pop(sid)  # and a real disappearance is still reported
    await executor.reconcile()
    assert states(frames, sid) == ["running", "failed"]


async def test_a_session_stopped_during_the_snapshot_is_not_reported_running_again():
    backend, executor, frames = setup()
    sid = str(uuid.uuid4())
    await command(executor, "start_session", sid)
    await until(lambda: not executor.busy(sid) and states(frames, sid), what="the session reported running")
    backend.release.clear()
    reconciling = asyncio.ensure_future(executor.reconcile())  # the snapshot has it running
    await asyncio.sleep(0)
    await command(executor, "stop_session", sid)
    await until(lambda: not executor.busy(sid) and states(frames, sid)[-1] == "stopped", what="stopped")
    backend.release.set()
    await reconciling
    await executor.reconcile()
    assert states(frames, sid) == ["running", "stopped"]

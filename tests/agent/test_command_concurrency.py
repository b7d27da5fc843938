"""The command executor runs the commands of different sessions at once, each session's in
order, and sends a launch's step statuses only when no newer status supersedes them
(agent_runtime/commands.py): a scripted backend, the executor's frames recorded."""

from __future__ import annotations

import asyncio
import time
import uuid

from agent_runtime.backends.base import BackendError, SessionSpec
from agent_runtime.commands import CommandExecutor
from agent_runtime.protocol import STEP_WORKLOAD, Ack, Command, InventoryItem, Result, SessionStatus
from tests.support.waits import until


class ScriptedBackend:
    """Starts that report the workload step, then wait for ``release`` (when ``hold``) or
    ``pause`` seconds, then run ready (or raise ``fail``); every call is logged in order."""

    def __init__(
        self,
        *,
        hold: bool = False,
        pause: float = 0.0,
        fail: str | None = None,
        fails_its_step: bool = False,
        answers_after: float = 0.0,
    ) -> None:
        self.hold, self.pause, self.fail = hold, pause, fail
        self.fails_its_step = fails_its_step  # mark the step failed itself before raising (as Docker's image step)
        self.answers_after = answers_after  # seconds from the end of start() until the port answers
        self.started_at: dict[str, float] = {}
        self.release = asyncio.Event()
        self.calls: list[tuple[str, str]] = []
        self.running: set[str] = set()  # sessions inside start() now
        self.most_at_once = 0
        self.listener = None

    async def start(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        self.calls.append(("start", session_id))
        self.running.add(session_id)
        self.most_at_once = max(self.most_at_once, len(self.running))
        try:
            await self.listener.step(session_id, STEP_WORKLOAD, "Starting the process", "active")
            if self.hold:
                await self.release.wait()
            await asyncio.sleep(self.pause)
            if self.fail:
                if self.fails_its_step:
                    await self.listener.step(session_id, STEP_WORKLOAD, "Starting the process failed", "failed")
                raise BackendError(self.fail)
            await self.listener.step(session_id, STEP_WORKLOAD, "Process started", "done")
        finally:
            self.running.discard(session_id)
            self.calls.append(("started", session_id))
        self.started_at[session_id] = time.monotonic()
        return await self.status(session_id)

    async def status(self, session_id: str) -> InventoryItem:
        answers = time.monotonic() - self.started_at[session_id] >= self.answers_after
        return InventoryItem(session_id=session_id, state="running", streaming_ready=answers, streaming_port=8080)

    async def until_answering(self, session_id: str, item: InventoryItem, within: float) -> None:
        await asyncio.sleep(within)

    async def stop(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        self.calls.append(("stop", session_id))
        return InventoryItem(session_id=session_id, state="stopped")


class Frames:
    def __init__(self) -> None:
        self.sent: list = []

    async def __call__(self, payload) -> None:
        self.sent.append(payload)

    def of(self, session_id: str) -> list:
        return [f for f in self.sent if getattr(f, "session_id", None) == session_id]

    def result(self, command_id: str) -> Result | None:
        return next((f for f in self.sent if isinstance(f, Result) and f.command_id == command_id), None)


def executor_for(backend: ScriptedBackend, frames: Frames, **options) -> CommandExecutor:
    executor = CommandExecutor(backend, frames, is_leader=lambda: True, **options)
    backend.listener = executor
    return executor


def command(session_id: str, action: str = "start_session") -> Command:
    return Command(command_id=uuid.uuid4().hex, action=action, session_id=session_id, spec={"command": ["x"]})


async def test_starts_of_different_sessions_run_at_once_and_each_reports_its_result():
    backend, frames = ScriptedBackend(hold=True), Frames()
    executor = executor_for(backend, frames)
    commands = [command(f"s{i}") for i in range(8)]
    for c in commands:
        await executor.submit(c)
    assert [f.command_id for f in frames.sent if isinstance(f, Ack)] == [c.command_id for c in commands]
    await until(lambda: len(backend.running) == 8, 5, what="all eight starts inside the backend together")
    backend.release.set()
    results = await until(lambda: all(frames.result(c.command_id) for c in commands), 5)
    assert results and all(frames.result(c.command_id).ok for c in commands)
    assert backend.most_at_once == 8
    await executor.drain(5)


async def test_the_commands_of_one_session_run_one_after_the_other_in_order():
    backend, frames = ScriptedBackend(hold=True), Frames()
    executor = executor_for(backend, frames)
    start, stop = command("one"), command("one", "stop_session")
    await executor.submit(start)
    await executor.submit(stop)
    await until(lambda: backend.running == {"one"}, 5)
    await asyncio.sleep(0.05)  # the stop had every chance to overtake the start: it must not
    assert ("stop", "one") not in backend.calls
    backend.release.set()
    await until(lambda: frames.result(stop.command_id), 5)
    assert backend.calls == [("start", "one"), ("started", "one"), ("stop", "one")]
    await executor.drain(5)


async def test_a_fast_launch_sends_only_the_status_that_ends_it():
    backend, frames = ScriptedBackend(), Frames()
    executor = executor_for(backend, frames, progress_delay=0.2)
    start = command("fast")
    await executor.submit(start)
    await until(lambda: [s for s in frames.of("fast") if isinstance(s, SessionStatus)], 5)
    await asyncio.sleep(0.4)  # past the delay: a superseded step status would have gone out by now
    statuses = [f for f in frames.of("fast") if isinstance(f, SessionStatus)]
    assert [(s.state, s.streaming_ready) for s in statuses] == [("running", True)]
    assert [(p.step, p.state) for p in statuses[0].progress] == [
        ("workload", "done"),
        ("stream", "done"),
        ("ready", "done"),
    ]
    assert frames.result(start.command_id).ok
    await executor.drain(5)


async def test_a_slow_step_is_shown_while_it_runs_and_never_after_a_newer_status():
    backend, frames = ScriptedBackend(hold=True), Frames()
    executor = executor_for(backend, frames, progress_delay=0.05)
    start = command("slow")
    await executor.submit(start)
    starting = await until(lambda: [f for f in frames.of("slow") if isinstance(f, SessionStatus)], 5)
    assert starting[0].state == "starting" and [(p.step, p.state) for p in starting[0].progress] == [
        ("workload", "active")
    ]
    assert frames.result(start.command_id) is None  # shown while the start still runs
    backend.release.set()
    await until(lambda: frames.result(start.command_id), 5)
    await asyncio.sleep(0.2)
    statuses = [f for f in frames.of("slow") if isinstance(f, SessionStatus)]
    assert [s.state for s in statuses] == ["starting", "running"] and statuses[-1].streaming_ready
    await executor.drain(5)


async def test_a_failed_start_reports_its_failed_step_and_result_and_nothing_after():
    backend, frames = ScriptedBackend(fail="cannot start 'x': No such file or directory"), Frames()
    executor = executor_for(backend, frames, progress_delay=0.1)
    start = command("bad")
    await executor.submit(start)
    result = await until(lambda: frames.result(start.command_id), 5)
    assert not result.ok and "No such file" in result.error
    await asyncio.sleep(0.3)  # past the delay of the step reported before the failure
    statuses = [f for f in frames.of("bad") if isinstance(f, SessionStatus)]
    assert len(statuses) == 1
    assert [(p.step, p.state) for p in statuses[0].progress] == [("workload", "failed")]
    assert frames.sent.index(statuses[0]) < frames.sent.index(result)
    await executor.drain(5)


async def test_a_step_the_backend_failed_itself_goes_out_before_the_result():
    """The backend marks its step failed and raises within the delay: that step's status,
    still waiting, is sent with the failure instead of being dropped with the launch."""
    backend, frames = ScriptedBackend(fail="pulling it failed", fails_its_step=True), Frames()
    executor = executor_for(backend, frames, progress_delay=0.5)
    start = command("pull")
    await executor.submit(start)
    result = await until(lambda: frames.result(start.command_id), 5)
    statuses = [f for f in frames.of("pull") if isinstance(f, SessionStatus)]
    assert len(statuses) == 1 and frames.sent.index(statuses[0]) < frames.sent.index(result)
    assert [(p.step, p.state, p.label) for p in statuses[0].progress] == [
        ("workload", "failed", "Starting the process failed")
    ]
    await executor.drain(5)


async def test_a_workload_that_answers_within_the_delay_is_reported_once_ready():
    backend, frames = ScriptedBackend(answers_after=0.05), Frames()
    executor = executor_for(backend, frames, progress_delay=0.3)
    await executor.submit(command("quick"))
    await until(lambda: [f for f in frames.of("quick") if isinstance(f, SessionStatus)], 5)
    await asyncio.sleep(0.5)  # past the delay: the superseded "running, not answering" would be out
    statuses = [f for f in frames.of("quick") if isinstance(f, SessionStatus)]
    assert [(s.state, s.streaming_ready) for s in statuses] == [("running", True)]
    await executor.drain(5)


async def test_a_workload_slow_to_answer_is_reported_running_first_then_ready():
    backend, frames = ScriptedBackend(answers_after=0.6), Frames()
    executor = executor_for(backend, frames, progress_delay=0.05)
    await executor.submit(command("late"))
    ready = await until(lambda: [f for f in frames.of("late") if isinstance(f, SessionStatus) and f.streaming_ready], 5)
    statuses = [f for f in frames.of("late") if isinstance(f, SessionStatus)]
    assert [(s.state, s.streaming_ready) for s in statuses] == [("running", False), ("running", True)]
    assert [(p.step, p.state) for p in statuses[0].progress] == [("workload", "done"), ("stream", "active")]
    assert ready[-1].progress[-1].step == "ready"
    await executor.drain(5)

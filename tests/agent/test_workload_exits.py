"""A dead workload is reported as failed within seconds, with how it ended: the local
backend's processes through the real command executor (no control plane: the executor's
frames are recorded), plus the pure parts (output tails, exit descriptions, launch steps)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid

import pytest

from agent_runtime.backends.base import SessionSpec, describe_exit, signal_exit_code
from agent_runtime.backends.docker_objects import exit_code_of
from agent_runtime.backends.local import LocalBackend, process_start_time
from agent_runtime.commands import CommandExecutor
from agent_runtime.logtail import file_tail, redact, tail
from agent_runtime.progress import LaunchProgress
from agent_runtime.protocol import Command, SessionStatus
from tests.support.waits import until

SAME_USER = {"session_user": os.environ["STREAMSPACE_LOCAL_SESSION_USER"]}  # tests/conftest.py
CRASH = [
    "sh",
    "-c",
    "echo starting; echo MARKER-crash-42 >&2; echo AGENT_TOKEN=agent-secret-value; echo 'db password=hunter2'; exit 3",
]
SERVE = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}"]
WITHIN_S = 5.0  # "within seconds": far below the agent's periodic check, which never runs here


class Recorder:
    """The executor's ``send``: keeps every frame and wakes whoever waits for one."""

    def __init__(self) -> None:
        self.frames: list = []
        self._changed = asyncio.Condition()

    async def __call__(self, payload) -> None:
        async with self._changed:
            self.frames.append(payload)
            self._changed.notify_all()

    def statuses(self, session_id: str, state: str | None = None) -> list[SessionStatus]:
        return [
            f
            for f in self.frames
            if isinstance(f, SessionStatus) and f.session_id == session_id and (state is None or f.state == state)
        ]

    async def wait_for(self, predicate, timeout: float = WITHIN_S):
        async def _wait():
            async with self._changed:
                while not (value := predicate()):
                    await self._changed.wait()
                return value

        return await asyncio.wait_for(_wait(), timeout)

    async def status(self, session_id: str, state: str, timeout: float = WITHIN_S) -> SessionStatus:
        return (await self.wait_for(lambda: self.statuses(session_id, state), timeout))[-1]


@pytest.fixture
async def agent(tmp_path):
    """A local backend wired to an executor the way the agent's connection wires them."""
    backend = LocalBackend(agent_id="local", data_dir=tmp_path, options=SAME_USER)
    recorder = Recorder()
    executor = CommandExecutor(backend, recorder, is_leader=lambda: True)
    backend.listen(executor)
    yield backend, executor, recorder
    await executor.drain(5)
    fresh = LocalBackend(agent_id="local", data_dir=tmp_path, options=SAME_USER)
    for item in await fresh.inventory():
        await fresh.stop(item.session_id, SessionSpec())


async def start(executor: CommandExecutor, session_id: str, command: list[str]) -> None:
    spec = {"command": command, "user": "alice", "template": "t", "persistent_home": False}
    await executor.submit(
        Command(command_id=uuid.uuid4().hex, action="start_session", session_id=session_id, spec=spec)
    )


def pid_of(backend: LocalBackend, session_id: str) -> int:
    return json.loads(backend.state_path.read_text())[session_id]["pid"]


async def test_a_command_that_exits_at_once_fails_with_its_exit_code_and_output(agent):
    backend, executor, recorder = agent
    began = time.monotonic()
    await start(executor, "crash", CRASH)
    failed = await recorder.status("crash", "failed")
    assert time.monotonic() - began < WITHIN_S
    assert failed.exit_code == 3
    assert failed.message == "The process exited with code 3 before the session was ready."
    assert "MARKER-crash-42" in failed.log_tail and "starting" in failed.log_tail
    assert "agent-secret-value" not in failed.log_tail and "hunter2" not in failed.log_tail
    assert "AGENT_TOKEN=[REDACTED]" in failed.log_tail
    # the launch's steps: the step the process died in failed (it may die before or after the
    # agent saw it start), whatever came before it is done
    steps = [(s.step, s.state) for s in failed.progress]
    assert steps in ([("workload", "failed")], [("workload", "done"), ("stream", "failed")]), steps
    assert failed.progress[-1].label == "The process exited with code 3."
    # and the backend agrees, on its own and after a restart of the agent
    assert (await backend.status("crash")).state == "failed"
    restarted = LocalBackend(agent_id="local", data_dir=backend.data_dir, options=SAME_USER)
    assert (await restarted.status("crash")).state == "failed"
    assert not any(f.state == "running" for f in recorder.statuses("crash")[recorder.frames.index(failed) :])


async def test_a_process_that_exited_before_it_was_recorded_is_never_alive(agent):
    """The record of a process that was already gone when the agent read its start time."""
    backend, _, _ = agent
    assert not LocalBackend._alive({"pid": os.getpid(), "pid_start": None})
    assert LocalBackend._alive({"pid": os.getpid(), "pid_start": process_start_time(os.getpid())})


async def test_a_ready_session_killed_from_outside_fails_within_seconds_with_the_signal(agent):
    backend, executor, recorder = agent
    await start(executor, "served", SERVE)
    ready = await recorder.wait_for(lambda: [s for s in recorder.statuses("served") if s.streaming_ready], 15)
    assert [(s.step, s.state) for s in ready[-1].progress] == [
        ("workload", "done"),
        ("stream", "done"),
        ("ready", "done"),
    ]
    killed_at = time.monotonic()
    os.kill(pid_of(backend, "served"), signal.SIGKILL)
    failed = await recorder.status("served", "failed")
    assert time.monotonic() - killed_at < WITHIN_S
    assert failed.exit_code == 137
    assert failed.message == "The process was killed by signal 9, SIGKILL (exit code 137)."
    assert failed.progress is None  # the launch was over: its steps stay as they were
    assert '"GET / HTTP/1.1" 200' in failed.log_tail  # http.server logged the agent's readiness probe


async def test_stopping_or_hibernating_a_session_is_not_a_failure(agent):
    backend, executor, recorder = agent
    for session_id, action in (("to-stop", "stop_session"), ("to-sleep", "hibernate_session")):
        await start(executor, session_id, SERVE)
        await recorder.wait_for(lambda sid=session_id: [s for s in recorder.statuses(sid) if s.streaming_ready], 15)
        await executor.submit(Command(command_id=uuid.uuid4().hex, action=action, session_id=session_id))
        expected = "stopped" if action == "stop_session" else "hibernated"
        await recorder.status(session_id, expected, timeout=15)
        # a platform that reports every exit (Docker's events do) tells of this one too
        executor.exited(session_id, 143)
    await until(lambda: not executor.busy("to-stop") and not executor.busy("to-sleep"), what="exit notices checked")
    assert recorder.statuses("to-stop", "failed") == [] and recorder.statuses("to-sleep", "failed") == []


async def test_a_process_adopted_after_an_agent_restart_is_watched_too(agent, tmp_path):
    backend, executor, recorder = agent
    await start(executor, "adopted", SERVE)
    await recorder.wait_for(lambda: [s for s in recorder.statuses("adopted") if s.streaming_ready], 15)
    restarted = LocalBackend(agent_id="local", data_dir=tmp_path, options=SAME_USER)
    exits: asyncio.Queue = asyncio.Queue()

    class Listener:
        async def step(self, *args) -> None:
            return None

        def exited(self, session_id: str, exit_code: int | None) -> None:
            exits.put_nowait((session_id, exit_code))

        def leading(self) -> bool:
            return True

    restarted.listen(Listener())
    pidfds = _pidfds()
    watch = asyncio.create_task(restarted.watch())
    try:
        while _pidfds() == pidfds:  # the watch opens one pidfd for the adopted process
            assert not watch.done(), watch
            await asyncio.sleep(0.01)
        os.kill(pid_of(backend, "adopted"), signal.SIGKILL)
        # not this backend's child: the exit is known, its status is not
        assert await asyncio.wait_for(exits.get(), WITHIN_S) == ("adopted", None)
        assert (await restarted.status("adopted")).state == "failed"
        info = await restarted.exit_info("adopted")
        assert info.exit_code is None and info.description == "The process ended (its exit status is unknown)."
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
    assert _pidfds() == pidfds  # and closes it


def _pidfds() -> int:
    """How many pidfds this process holds."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since it was listed
            count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
    return count


# --- the pure parts -----------------------------------------------------------------------


def test_tail_keeps_the_last_lines_within_the_byte_bound():
    text = "".join(f"line {i}\n" for i in range(1000))
    kept = tail(text)
    assert kept.splitlines() == [f"line {i}" for i in range(900, 1000)]
    small = tail(text, max_bytes=30)
    assert len(small.encode()) <= 30 and small.splitlines()[-1] == "line 999" and small.startswith("line")
    assert tail("é" * 5000, max_bytes=11) == "ééééé"  # never half a character
    assert tail(b"a\r\nb\x00c\n\xff\n") == "a\nbc\n\ufffd"
    assert tail("") == "" and tail("\n\n") == ""


def test_tail_masks_secrets_before_it_cuts():
    line = "AGENT_TOKEN=abcdefabcdefabcdef password: hunter2 Authorization: Bearer abcdefghijklmnop"
    masked = tail(line)
    for secret in ("abcdefabcdef", "hunter2", "abcdefghijklmnop"):
        assert secret not in masked
    assert redact("postgres://app:s3cret@db:5432/x") == "postgres://app:[REDACTED]@db:5432/x"
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"
    assert "MIIEow" not in redact(f"before\n{key}\nafter") and "after" in redact(f"before\n{key}\nafter")
    assert redact("nothing to hide: x=1") == "nothing to hide: x=1"


def test_file_tail_reads_only_the_end(tmp_path):
    path = tmp_path / "out.log"
    path.write_text("".join(f"row {i}\n" for i in range(100_000)))
    assert file_tail(path).splitlines()[-1] == "row 99999"
    assert file_tail(tmp_path / "missing.log") == ""


def test_exit_statuses_are_described_for_people():
    assert signal_exit_code(-9) == 137 and signal_exit_code(3) == 3
    assert describe_exit("process", 3) == "The process exited with code 3."
    assert describe_exit("process", 0) == "The process exited with code 0."
    assert describe_exit("container", 143) == "The container was killed by signal 15, SIGTERM (exit code 143)."
    assert (
        describe_exit("container", 137, oom=True) == "The container was killed: it ran out of memory (exit code 137)."
    )
    assert describe_exit("process", None) == "The process ended (its exit status is unknown)."
    assert describe_exit("process", 255) == "The process exited with code 255."


def test_a_containers_exit_code_is_read_only_once_it_exited():
    assert exit_code_of({"State": {"Status": "exited", "ExitCode": 3}}) == 3
    assert exit_code_of({"State": {"Status": "running", "ExitCode": 0}}) is None
    assert exit_code_of({"State": {"Status": "created", "ExitCode": 0}}) is None
    assert exit_code_of({}) is None


def test_launch_steps_are_timed_and_updated_by_name():
    now = [100.0]
    launch = LaunchProgress("starting", clock=lambda: now[0])
    launch.update("image", "Pulling image x")
    now[0] = 102.5
    launch.update("workload", "Creating the container")  # finishes the pull
    now[0] = 103.0
    launch.update("workload", "Starting the container")  # same step: keeps its start
    now[0] = 103.5
    launch.update("workload", "Container started", "done")
    assert launch.current is None
    launch.update("stream", "Waiting for the session")
    assert launch.current == "stream"
    now[0] = 106.0
    launch.fail("The container exited with code 3.")
    steps = [(s.step, s.label, s.state, s.at_s, s.duration_s) for s in launch.steps()]
    assert steps == [
        ("image", "Pulling image x", "done", 0.0, 2.5),
        ("workload", "Container started", "done", 2.5, 1.0),
        ("stream", "The container exited with code 3.", "failed", 3.5, 2.5),
    ]
    for i in range(40):
        launch.update(f"extra-{i}", "x", "done")
    assert len(launch.steps()) == 16 and launch.steps()[-1].step == "extra-39"

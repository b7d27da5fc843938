"""A Docker container that dies is reported as failed within seconds, with its exit code and
log tail: the Docker backend (real engine, the local test image) through the real command
executor, whose frames are recorded. The engine's event stream is what notices: the agent's
periodic check never runs here."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from agent_runtime.backends.base import SessionSpec
from agent_runtime.backends.docker import DockerBackend
from agent_runtime.commands import CommandExecutor
from agent_runtime.protocol import Command
from tests.agent.test_workload_exits import WITHIN_S, Recorder
from tests.support.docker import TEST_IMAGE

pytestmark = pytest.mark.docker

CRASH = ["sh", "-c", "echo MARKER-container-7 >&2; echo 'password=hunter2'; exit 3"]


@pytest.fixture
async def agent(docker_agent_id, tmp_path):
    backend = DockerBackend(agent_id=docker_agent_id, data_dir=tmp_path, options={"stop_timeout": "2", "pull": "never"})
    recorder = Recorder()
    executor = CommandExecutor(backend, recorder, is_leader=lambda: True)
    backend.listen(executor)
    watch = asyncio.create_task(backend.watch())
    yield backend, executor, recorder
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    await executor.drain(5)
    await backend.close()


async def start(executor: CommandExecutor, agent_id: str, session_id: str, **spec) -> None:
    body = {"image": TEST_IMAGE, "user": agent_id, "template": "t", "persistent_home": False, **spec}
    await executor.submit(
        Command(command_id=uuid.uuid4().hex, action="start_session", session_id=session_id, spec=body)
    )


def session_id() -> str:
    return f"exits-{uuid.uuid4().hex[:12]}"  # container names are global on the engine


async def test_a_container_that_exits_at_once_fails_with_its_code_and_log(agent, docker_agent_id):
    backend, executor, recorder = agent
    sid = session_id()
    began = time.monotonic()
    await start(executor, docker_agent_id, sid, command=CRASH)
    failed = await recorder.status(sid, "failed", timeout=30)
    assert time.monotonic() - began < 30  # includes creating the container
    assert failed.exit_code == 3
    assert failed.message == "The container exited with code 3 before the session was ready."
    assert "MARKER-container-7" in failed.log_tail and "hunter2" not in failed.log_tail
    steps = [(s.step, s.state) for s in failed.progress]
    assert steps[0] == ("image", "done") and steps[-1][1] == "failed"
    assert all(s.duration_s is not None and s.duration_s >= 0 for s in failed.progress)
    # the starting frames came first, each with the steps so far, in order
    starting = recorder.statuses(sid, "starting")
    assert [s.progress[0].label for s in starting][0] == f"Image {TEST_IMAGE} is present"
    assert [len(s.progress) for s in starting] == sorted(len(s.progress) for s in starting)


async def test_a_running_container_killed_from_outside_fails_within_seconds(agent, docker_agent_id, docker_client):
    backend, executor, recorder = agent
    sid = session_id()
    await start(executor, docker_agent_id, sid)
    ready = await recorder.wait_for(lambda: [s for s in recorder.statuses(sid) if s.streaming_ready], 30)
    assert [s.step for s in ready[-1].progress] == ["image", "workload", "stream", "ready"]
    killed_at = time.monotonic()
    docker_client.containers.get(f"streamspace-{sid}").kill()
    failed = await recorder.status(sid, "failed")
    assert time.monotonic() - killed_at < WITHIN_S
    assert failed.exit_code == 137
    assert failed.message == "The container was killed by signal 9, SIGKILL (exit code 137)."


async def test_hibernating_a_container_is_not_a_failure(agent, docker_agent_id):
    backend, executor, recorder = agent
    sid = session_id()
    await start(executor, docker_agent_id, sid)
    await recorder.wait_for(lambda: [s for s in recorder.statuses(sid) if s.streaming_ready], 30)
    await executor.submit(Command(command_id=uuid.uuid4().hex, action="hibernate_session", session_id=sid))
    await recorder.status(sid, "hibernated", timeout=30)
    # the engine's die event of the stop arrives too; a wake makes a frame to wait for
    await executor.submit(
        Command(
            command_id=uuid.uuid4().hex,
            action="wake_session",
            session_id=sid,
            spec={"image": TEST_IMAGE, "user": docker_agent_id, "template": "t", "persistent_home": False},
        )
    )
    await recorder.wait_for(lambda: len([s for s in recorder.statuses(sid) if s.streaming_ready]) == 2, 30)
    assert recorder.statuses(sid, "failed") == []
    await backend.stop(sid, SessionSpec())

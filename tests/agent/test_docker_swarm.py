"""The Docker backend's Swarm mode against the real engine as a single-node Swarm manager:
sessions as services (launch, ready, hibernate, wake, stop), failed tasks, the home's node."""

from __future__ import annotations

import asyncio
import secrets
import urllib.request
import uuid

import docker.errors
import pytest

from agent_runtime.backends.base import BackendError, SessionSpec
from agent_runtime.backends.docker import DockerBackend
from agent_runtime.backends.docker_objects import home_volume_name
from agent_runtime.backends.docker_swarm import DockerSwarmBackend, home_node_config_name
from agent_runtime.commands import CommandExecutor
from agent_runtime.config import LeaseConfig
from agent_runtime.protocol import Command
from tests.agent.test_workload_exits import WITHIN_S, Recorder
from tests.support.docker import TEST_IMAGE
from tests.support.waits import until

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
async def swarm_backend(swarm_manager, docker_client, docker_agent_id, tmp_path):
    backend = DockerBackend(
        agent_id=docker_agent_id,
        data_dir=tmp_path,
        options={"mode": "swarm", "stop_timeout": "2", "start_timeout": "60", "network": "streamspace-swarm-tests"},
    )
    assert isinstance(backend, DockerSwarmBackend)
    yield backend
    await backend.close()
    label = f"streamspace.managed-by={docker_agent_id}"
    for service in docker_client.services.list(filters={"label": label}):
        service.remove()
    for config in docker_client.configs.list(filters={"label": label}):
        config.remove()
    await until(lambda: not containers_of(docker_client, label), timeout=30)


def containers_of(docker_client, label: str) -> list:
    """The containers carrying ``label`` (the list may name one Swarm is removing meanwhile)."""
    try:
        return docker_client.containers.list(all=True, filters={"label": label})
    except docker.errors.NotFound:
        return ["(one was being removed)"]


def spec_for(agent_id: str, **overrides) -> SessionSpec:
    base = {"image": TEST_IMAGE, "user": agent_id, "template": "test", "cpu_millicores": 250, "memory_mb": 64,
            "persistent_home": True, "streaming_port": 8080}  # fmt: skip
    return SessionSpec.parse({**base, **overrides})


def sid() -> str:
    return f"swarm-{secrets.token_hex(4)}"


async def ready(backend, session_id: str):
    return await until(lambda: _ready(backend, session_id), timeout=30)


async def _ready(backend, session_id):
    item = await backend.status(session_id)
    return item if item.streaming_ready else None


def home_file(docker_client, session_id: str, script: str) -> str:
    (container,) = docker_client.containers.list(filters={"label": f"streamspace.session-id={session_id}"})
    code, output = container.exec_run(["sh", "-c", script])
    assert code == 0, output
    return output.decode().strip()


async def test_launch_hibernate_wake_stop(swarm_backend, docker_client, docker_agent_id, swarm_manager):
    session_id = sid()
    spec = spec_for(docker_agent_id)
    item = await swarm_backend.start(session_id, spec)
    assert item.state == "running"
    service = docker_client.services.get(f"streamspace-{session_id}")
    assert service.attrs["Spec"]["Labels"]["streamspace.managed-by"] == docker_agent_id
    item = await ready(swarm_backend, session_id)
    with urllib.request.urlopen(f"http://{item.endpoint}/", timeout=5) as response:
        assert response.status == 200
    home_file(docker_client, session_id, "echo kept > /home/user/note")
    # the local home's node is recorded in the swarm, for every manager to see
    config = docker_client.configs.get(home_node_config_name(docker_agent_id))
    assert config.attrs["Spec"]["Labels"]["streamspace.home-node"] == swarm_manager
    assert await swarm_backend.start(session_id, spec) == await swarm_backend.status(session_id)  # idempotent

    item = await swarm_backend.hibernate(session_id)
    assert item.state == "hibernated"
    service.reload()
    assert service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 0
    assert f"node.id=={swarm_manager}" in service.attrs["Spec"]["TaskTemplate"]["Placement"]["Constraints"]
    assert not docker_client.containers.list(filters={"label": f"streamspace.session-id={session_id}"})
    assert (await swarm_backend.hibernate(session_id)).state == "hibernated"  # idempotent
    assert [i.state for i in await swarm_backend.inventory()] == ["hibernated"]

    item = await swarm_backend.wake(session_id, spec)
    assert item.state == "running"
    await ready(swarm_backend, session_id)
    assert home_file(docker_client, session_id, "cat /home/user/note") == "kept"  # the home survived

    (listed,) = await swarm_backend.inventory()
    assert listed.session_id == session_id and listed.state == "running"

    assert (await swarm_backend.stop(session_id, spec)).state == "stopped"
    with pytest.raises(docker.errors.NotFound):
        docker_client.services.get(f"streamspace-{session_id}")
    assert docker_client.volumes.get(home_volume_name(docker_agent_id))  # kept unless asked
    assert (await swarm_backend.status(session_id)).state == "stopped"
    assert (await swarm_backend.stop(session_id, spec)).state == "stopped"  # idempotent
    with pytest.raises(BackendError):
        await swarm_backend.hibernate(session_id)

    # a stopped session's wake re-creates it on the home's node; delete_home removes it all
    assert (await swarm_backend.wake(session_id, spec)).state == "running"
    service = docker_client.services.get(f"streamspace-{session_id}")
    assert f"node.id=={swarm_manager}" in service.attrs["Spec"]["TaskTemplate"]["Placement"]["Constraints"]
    await swarm_backend.stop(session_id, spec_for(docker_agent_id, delete_home=True))
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(home_volume_name(docker_agent_id))
    with pytest.raises(docker.errors.NotFound):
        docker_client.configs.get(home_node_config_name(docker_agent_id))


async def test_a_missing_image_fails_the_session_with_swarms_reason(swarm_backend, docker_agent_id):
    session_id = sid()
    item = await swarm_backend.start(session_id, spec_for(docker_agent_id, image="streamspace-swarm-missing:nope"))
    assert item.state == "failed"
    assert (await swarm_backend.status(session_id)).state == "failed"
    info = await swarm_backend.exit_info(session_id)
    assert "No such image" in info.description and info.exit_code is None
    assert await swarm_backend.check_tasks() == [session_id]  # reported once per task
    assert await swarm_backend.check_tasks() == []


async def test_a_task_that_exits_later_is_reported_without_being_asked(swarm_backend, docker_agent_id):
    exited: list[tuple[str, int | None]] = []

    class Listener:
        async def step(self, *args):
            return None

        def exited(self, session_id, exit_code):
            exited.append((session_id, exit_code))

        def leading(self) -> bool:
            return True

    swarm_backend.listen(Listener())
    watcher = asyncio.create_task(swarm_backend.watch())
    try:
        session_id = sid()
        spec = spec_for(docker_agent_id, persistent_home=False, command=["sh", "-c", "echo bye; sleep 2; exit 3"])
        assert (await swarm_backend.start(session_id, spec)).state == "running"
        await until(lambda: (session_id, 3) in exited, timeout=30)  # the container's die event
        # Swarm records the task's end a moment after the container's: the task poll reports it too
        await until(lambda: exited.count((session_id, 3)) >= 2, timeout=30)
        assert (await swarm_backend.status(session_id)).state == "failed"
        info = await swarm_backend.exit_info(session_id)
        assert info.exit_code == 3 and "code 3" in info.description
        assert "bye" in info.log_tail
        item = await swarm_backend.start(session_id, spec)  # a failed session starts again
        assert item.state == "running"
    finally:
        watcher.cancel()


async def test_prepare_accepts_a_manager_and_capacity_sums_the_nodes(swarm_backend):
    lease = LeaseConfig(enabled=True, backend="swarm", lease_key="k")
    assert await swarm_backend.prepare(lease) == lease
    capacity = await swarm_backend.capacity()
    assert capacity.cpu_millicores >= 1000 and capacity.memory_mb > 0 and capacity.images is None


@pytest.fixture
async def executor(swarm_backend):
    """The real command executor over the Swarm mode, its frames recorded, the watch running."""
    recorder = Recorder()
    commands = CommandExecutor(swarm_backend, recorder, is_leader=lambda: True)
    swarm_backend.listen(commands)
    watch = asyncio.create_task(swarm_backend.watch())
    yield commands, recorder
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    await commands.drain(5)


async def submit(commands, session_id: str, spec: dict) -> None:
    await commands.submit(
        Command(command_id=uuid.uuid4().hex, action="start_session", session_id=session_id, spec=spec)
    )


async def test_through_the_agent_a_missing_image_is_a_failed_session_with_the_reason(executor, docker_agent_id):
    commands, recorder = executor
    session_id = sid()
    spec = {"image": "streamspace-swarm-missing:nope", "user": docker_agent_id, "persistent_home": False}
    await submit(commands, session_id, spec)
    failed = await recorder.status(session_id, "failed", timeout=60)
    assert "No such image: streamspace-swarm-missing:nope" in failed.message
    assert failed.progress[-1].state == "failed"


async def test_through_the_agent_a_task_killed_from_outside_fails_within_seconds(
    executor, docker_agent_id, docker_client
):
    commands, recorder = executor
    session_id = sid()
    await submit(commands, session_id, {"image": TEST_IMAGE, "user": docker_agent_id, "persistent_home": False})
    await recorder.status(session_id, "running", timeout=60)
    (container,) = docker_client.containers.list(filters={"label": f"streamspace.session-id={session_id}"})
    container.kill()
    failed = await recorder.status(session_id, "failed", timeout=WITHIN_S)
    assert failed.exit_code == 137
    assert "killed by signal 9" in failed.message

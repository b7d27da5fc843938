"""The Docker backend against the real engine and the local test image (no pulls)."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request

import docker.api.client
import pytest

from agent_runtime.backends.base import BackendError, SessionSpec
from agent_runtime.backends.docker import DockerBackend
from agent_runtime.backends.docker_objects import home_volume_name
from tests.support.docker import TEST_IMAGE

pytestmark = pytest.mark.docker


@pytest.fixture
async def backend(docker_agent_id, tmp_path):
    backend = DockerBackend(agent_id=docker_agent_id, data_dir=tmp_path, options={"stop_timeout": "5", "pull": "never"})
    yield backend
    await backend.close()


def spec_for(agent_id: str, **overrides) -> SessionSpec:
    # The user name embeds the agent id so that the fixture can find and remove the volume.
    base = {"image": TEST_IMAGE, "user": agent_id, "template": "test", "cpu_millicores": 500, "memory_mb": 64,
            "persistent_home": True, "streaming_port": 8080}  # fmt: skip
    return SessionSpec.parse({**base, **overrides})


async def until_ready(backend, session_id: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = await backend.status(session_id)
        if item.streaming_ready:
            return item
        await asyncio.sleep(0.1)
    raise AssertionError(f"{session_id} never became ready: {item}")


def exec_sh(container, script: str) -> str:
    code, output = container.exec_run(["sh", "-c", script])
    assert code == 0, output
    return output.decode().strip()


async def test_full_lifecycle(backend, docker_client, docker_agent_id):
    spec = spec_for(docker_agent_id)
    item = await backend.start("s1", spec)
    assert item.state == "running"
    container = docker_client.containers.get("streamspace-s1")
    labels = container.labels
    assert labels["streamspace.session-id"] == "s1"
    assert labels["streamspace.user"] == docker_agent_id
    assert labels["streamspace.template"] == "test"
    assert labels["streamspace.managed-by"] == docker_agent_id
    host = container.attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 64 * 1024 * 1024
    assert host["Init"] is True
    mounts = {m["Name"]: m["Destination"] for m in container.attrs["Mounts"] if m["Type"] == "volume"}
    assert mounts == {home_volume_name(docker_agent_id): "/home/user"}
    assert docker_client.volumes.get(home_volume_name(docker_agent_id)).attrs["Labels"]["streamspace.user"] == (
        docker_agent_id  # labelled with its exact owner
    )
    networks = container.attrs["NetworkSettings"]["Networks"]
    assert list(networks) == ["streamspace-session-s1"]  # its own network (§19)
    assert not container.attrs["HostConfig"]["PortBindings"]  # nothing published on the host
    ready = await until_ready(backend, "s1")
    assert ready.endpoint == f"{networks['streamspace-session-s1']['IPAddress']}:8080"
    with urllib.request.urlopen(f"http://{ready.endpoint}/", timeout=5) as response:
        assert b"streamspace test session" in response.read()

    exec_sh(container, "echo kept > /home/user/before-hibernation.txt")
    assert (await backend.start("s1", spec)).state == "running"  # repeated: no-op
    assert docker_client.containers.get("streamspace-s1").id == container.id

    assert (await backend.hibernate("s1")).state == "hibernated"
    assert docker_client.containers.get("streamspace-s1").status == "exited"
    assert (await backend.hibernate("s1")).state == "hibernated"  # repeated: no-op

    assert (await backend.wake("s1", spec)).state == "running"
    assert (await backend.wake("s1", spec)).state == "running"  # repeated: no-op
    woken = docker_client.containers.get("streamspace-s1")
    assert woken.id == container.id and woken.status == "running"
    assert exec_sh(woken, "cat /home/user/before-hibernation.txt") == "kept"
    await until_ready(backend, "s1")

    assert (await backend.stop("s1", spec)).state == "stopped"
    assert (await backend.stop("s1", spec)).state == "stopped"  # repeated: no-op
    assert not docker_client.containers.list(all=True, filters={"name": "streamspace-s1"})
    assert not docker_client.networks.list(names=["streamspace-session-s1"])
    docker_client.volumes.get(home_volume_name(docker_agent_id))  # the home is kept


async def test_restarted_backend_reports_and_recreates_nothing(backend, docker_client, docker_agent_id, tmp_path):
    await backend.start("s2", spec_for(docker_agent_id))
    await backend.start("s3", spec_for(docker_agent_id, persistent_home=False))
    await backend.hibernate("s3")
    ids = {
        c.name: c.id
        for c in docker_client.containers.list(all=True, filters={"label": f"streamspace.managed-by={docker_agent_id}"})
    }
    restarted = DockerBackend(agent_id=docker_agent_id, data_dir=tmp_path, options={"pull": "never"})
    try:
        deadline = time.monotonic() + 20
        while True:
            inventory = {i.session_id: i for i in await restarted.inventory()}
            if inventory["s2"].streaming_ready or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert set(inventory) == {"s2", "s3"}
        assert (inventory["s2"].state, inventory["s2"].streaming_ready) == ("running", True)
        assert inventory["s3"].state == "hibernated"
        await restarted.start("s2", spec_for(docker_agent_id))
        after = {
            c.name: c.id
            for c in docker_client.containers.list(
                all=True, filters={"label": f"streamspace.managed-by={docker_agent_id}"}
            )
        }
        assert after == ids
    finally:
        await restarted.close()


async def test_errors_are_clear(backend, docker_agent_id):
    with pytest.raises(BackendError, match="not a valid container image reference"):
        await backend.start("s4", spec_for(docker_agent_id, image="Bad Image"))
    with pytest.raises(BackendError, match="not on this Docker host"):
        await backend.start("s4", spec_for(docker_agent_id, image="streamspace-absent-image:1"))
    with pytest.raises(BackendError, match="no container"):
        await backend.hibernate("never-started")
    assert (await backend.status("never-started")).state == "stopped"


async def test_delete_home_removes_the_volume(backend, docker_client, docker_agent_id):
    spec = spec_for(docker_agent_id)
    await backend.start("s5", spec)
    await backend.stop("s5", SessionSpec.parse({"delete_home": True, "user": docker_agent_id}))
    assert not docker_client.volumes.list(filters={"name": home_volume_name(docker_agent_id)})


async def test_docker_calls_do_not_block_the_event_loop(backend, docker_agent_id, monkeypatch):
    """Every request to the engine is made off the event loop's thread, and the loop keeps
    running while they are under way (checked by thread, not by timing a loaded machine)."""
    loop_thread = threading.get_ident()
    request_threads: list[int] = []
    send = docker.api.client.APIClient.send

    def recording_send(self, *args, **kwargs):
        request_threads.append(threading.get_ident())
        return send(self, *args, **kwargs)

    monkeypatch.setattr(docker.api.client.APIClient, "send", recording_send)
    ticks = 0
    stop = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    await backend.start("s6", spec_for(docker_agent_id))
    await backend.hibernate("s6")
    await backend.stop("s6", SessionSpec())
    stop.set()
    await task
    assert request_threads and loop_thread not in request_threads
    assert ticks > 10

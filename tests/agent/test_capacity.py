"""What an agent reports about itself in ``register`` and heartbeats (``Capacity``): the
session limit, the features of its host (a desktop) and the images present on it."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from agent_runtime import desktop, protocol
from agent_runtime.backends import docker as docker_backend
from agent_runtime.backends.local import LocalBackend
from agent_runtime.config import AgentConfig
from agent_runtime.connection import AgentConnection
from agent_runtime.leader import AlwaysLeader
from agent_runtime.protocol import AGENT_MESSAGES, FEATURE_DESKTOP, MAX_REPORTED_IMAGES, Capacity, decode, image_key
from tests.support.fakes import FakeControlPlane, RecordingBackend


@pytest.mark.parametrize(
    "reference,key",
    [
        ("nginx", "nginx:latest"),
        ("nginx:1.27", "nginx:1.27"),
        ("docker.io/library/nginx", "nginx:latest"),
        ("docker.io/myorg/app:2", "myorg/app:2"),
        ("ghcr.io/streamspace-dev/desktop", "ghcr.io/streamspace-dev/desktop:latest"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("localhost:5000/app:3", "localhost:5000/app:3"),
        ("repo/app@sha256:abc", "repo/app@sha256:abc"),
    ],
)
def test_image_keys_compare_references_as_docker_does(reference, key):
    assert image_key(reference) == key


def test_an_older_agents_capacity_still_parses_and_reports_nothing_new():
    raw = '{"type": "heartbeat", "payload": {"is_leader": true, "capacity": {"cpu_millicores": 1000, "sessions": 0}}}'
    capacity = decode(raw, AGENT_MESSAGES).payload.capacity
    assert (capacity.features, capacity.images, capacity.pulls_images) == (None, None, True)


def test_the_desktop_feature_needs_every_program(monkeypatch):
    present = {"Xvfb", "openbox", "xterm"}
    monkeypatch.setattr(desktop.shutil, "which", lambda name: f"/usr/bin/{name}" if name in present else None)
    monkeypatch.setattr(desktop, "selkies_command", lambda: ["selkies"])
    assert desktop.missing_dependencies() == []
    present.discard("openbox")
    assert desktop.missing_dependencies() == ["a window manager (Debian package 'openbox')"]
    present.discard("xterm")
    monkeypatch.setattr(desktop, "selkies_command", lambda: None)
    assert len(desktop.missing_dependencies()) == 3


async def test_the_local_backend_offers_a_desktop_only_when_it_can_start_one(tmp_path, monkeypatch):
    backend = LocalBackend(agent_id="local", data_dir=tmp_path)
    monkeypatch.setattr(desktop, "missing_dependencies", lambda: [])
    capacity = await backend.capacity()
    assert capacity.features == [FEATURE_DESKTOP] and capacity.cpu_millicores > 0
    monkeypatch.setattr(desktop, "missing_dependencies", lambda: ["Xvfb (Debian package 'xvfb')"])
    assert (await backend.capacity()).features == []


def test_docker_reports_every_tag_and_digest_of_its_images_bounded():
    images = [
        {"RepoTags": ["nginx:latest", "docker.io/library/nginx:1.27"], "RepoDigests": ["nginx@sha256:abc"]},
        {"RepoTags": ["<none>:<none>"], "RepoDigests": []},
        {"RepoTags": None, "RepoDigests": None},
        {"RepoTags": ["ghcr.io/streamspace-dev/desktop:latest"]},
    ]
    assert docker_backend.local_image_keys(images) == [
        "ghcr.io/streamspace-dev/desktop:latest",
        "nginx:1.27",
        "nginx:latest",
        "nginx@sha256:abc",
    ]
    many = [{"RepoTags": [f"app{i}:1"]} for i in range(MAX_REPORTED_IMAGES + 1)]
    assert docker_backend.local_image_keys(many) is None  # too many to list: "not reported"


async def test_docker_capacity_says_whether_it_pulls_and_survives_an_absent_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    backend = docker_backend.DockerBackend(agent_id="d", data_dir=tmp_path, options={"pull": "never"})
    try:
        capacity = await backend.capacity()
    finally:
        await backend.close()
    assert capacity.pulls_images is False and capacity.images is None and capacity.memory_mb > 0


class LimitedBackend(RecordingBackend):
    async def capacity(self) -> Capacity:
        return msgspec.structs.replace(await super().capacity(), features=["desktop"])


async def test_the_connection_reports_max_sessions_in_register_and_heartbeats(tmp_path):
    async with FakeControlPlane() as cp:
        config = AgentConfig(
            control_plane=cp.url,
            token=cp.token,
            agent_id="agent-1",
            platform="docker",
            instance_id="i-1",
            data_dir=tmp_path,
            max_sessions=4,
        )
        connection = AgentConnection(config, LimitedBackend(), AlwaysLeader())
        task = asyncio.create_task(connection.run())
        try:
            link = await cp.link()
            assert link.register.capacity.sessions == 4 and link.register.capacity.features == ["desktop"]
            await cp.wait_for(lambda: link.of_type("heartbeat"), timeout=5)
            assert link.of_type("heartbeat")[0].payload.capacity.sessions == 4
        finally:
            await connection.shutdown(drain_timeout=1)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def test_capacity_round_trips_through_a_frame():
    capacity = Capacity(sessions=2, features=["desktop"], images=["nginx:latest"], pulls_images=False)
    frame = protocol.encode(protocol.Heartbeat(is_leader=True, capacity=capacity))
    assert decode(frame, AGENT_MESSAGES).payload.capacity == capacity

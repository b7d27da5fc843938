"""The Docker engine for tests (a pytest plugin that ``tests/conftest.py`` loads): the engine
client with the test session image built, and a unique agent id whose containers and volumes
are removed after the test.

Without an engine the tests that need one are skipped locally and fail in CI."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import ROOT
from tests.support.ci import unavailable

TEST_IMAGE = "streamspace-test-session:latest"
"""Built from ``tests/images`` by ``tests/images/build.sh`` (no pulls)."""


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    try:
        import docker  # inside the try: a missing client library counts as a missing engine

        client = docker.from_env()
        client.ping()
    except Exception as exc:  # no engine here
        unavailable(f"needs a Docker engine (scripts/ensure-docker.sh): {exc}")
    build = subprocess.run([str(ROOT / "tests/images/build.sh")], capture_output=True, text=True, timeout=300)
    if build.returncode != 0:
        pytest.fail(f"building {TEST_IMAGE} failed:\n{build.stdout}\n{build.stderr}")
    yield client
    client.close()


@pytest.fixture
def docker_agent_id(docker_client: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A unique agent id; every container it labels, every volume it names and every network
    it labels is removed after."""
    agent_id = f"test-{secrets.token_hex(4)}"
    yield agent_id
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    containers = docker_client.containers.list(all=True, filters={"label": f"streamspace.managed-by={agent_id}"})
    for container in containers:
        if failed:
            sys.stderr.write(f"--- logs of {container.name} ({container.status})\n")
            sys.stderr.write(container.logs(tail=200).decode(errors="replace"))
        container.remove(force=True)
    for volume in docker_client.volumes.list(filters={"name": f"streamspace-home-{agent_id}"}):
        volume.remove(force=True)
    remove_networks(docker_client, agent_id)


def remove_networks(docker_client: Any, agent_id: str) -> None:
    """Remove the per-session networks an agent made (disconnecting what is still attached)."""
    for network in docker_client.networks.list(filters={"label": f"streamspace.managed-by={agent_id}"}):
        network.reload()
        for container_id in network.attrs.get("Containers") or {}:
            network.disconnect(container_id, force=True)
        network.remove()

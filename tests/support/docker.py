"""The Docker engine for tests (a pytest plugin that ``tests/conftest.py`` loads): the engine
client with the test session image built, and a unique agent id whose containers and volumes
are removed after the test.

Without an engine the tests that need one are skipped locally and fail in CI."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import ROOT
from tests.support.ci import unavailable
from tests.support.waits import wait_until

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
    """Remove the networks an agent made, disconnecting the containers still attached.

    An overlay network of Swarm mode also lists its load-balancer endpoint (``lb-<name>``)
    among its containers; that is no container, and the engine removes it with the network.
    A container may also leave between the listing and the disconnect (Swarm removing a
    task): gone is what the disconnect wanted.
    """
    import docker.errors  # the engine's client is imported lazily in this module (see above)

    label = {"label": f"streamspace.managed-by={agent_id}"}
    for network in docker_client.networks.list(filters=label):
        network.reload()
        for container_id in network.attrs.get("Containers") or {}:
            if container_id.startswith("lb-"):
                continue
            with contextlib.suppress(docker.errors.NotFound):
                network.disconnect(container_id, force=True)
        network.remove()
    # A Swarm overlay is removed in the background: a network of the same name made before
    # it is gone would be the dying one, and a service on it would fail to start.
    wait_until(lambda: not docker_client.networks.list(filters=label), timeout=30, what=f"{agent_id}'s networks gone")


@pytest.fixture(scope="session")
def swarm_manager(docker_client: Any) -> Iterator[str]:
    """The engine as a single-node Swarm manager; yields its node id.

    An engine already in a swarm is used as it is. One that is not is initialised here
    (advertising 127.0.0.1) and leaves the swarm after the test session, so nothing of the
    tests' Swarm outlives them; other users' plain containers are not affected either way.
    """
    state = (docker_client.info().get("Swarm") or {}).get("LocalNodeState")
    initialised = False
    if state != "active":
        try:
            docker_client.swarm.init(advertise_addr="127.0.0.1")
        except Exception as exc:
            unavailable(f"needs an engine that can run a single-node Swarm (docker swarm init): {exc}")
        initialised = True
    swarm = docker_client.info()["Swarm"]
    if not swarm.get("ControlAvailable"):
        unavailable("this engine is a Swarm worker; the Swarm tests need a manager")
    yield swarm["NodeID"]
    if initialised:
        docker_client.swarm.leave(force=True)

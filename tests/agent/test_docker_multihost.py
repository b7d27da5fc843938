"""Plain Docker across several hosts: one agent per daemon (the daemon's claim, leases scoped
to the daemon) and placement across hosts by the control plane (two agents, two agent ids).

This machine has one Docker daemon; "two hosts" are two agent ids on it with the claim off,
which is what the control plane sees of two hosts: two agents, each with its own sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import docker.errors
import pytest
from asgiref.sync import sync_to_async

from agent_runtime.backends.base import SessionSpec
from agent_runtime.backends.docker import DockerBackend
from agent_runtime.backends.docker_daemon import CLAIM_VOLUME, daemon_key
from agent_runtime.config import LeaseConfig
from agents_app.services import create_agent
from tests.support.docker import TEST_IMAGE
from tests.support.fakes import FakeControlPlane
from tests.support.processes import spawn_agent
from tests.support.waits import until

# The real control plane's fixtures, shared with the e2e tests: a test names them as arguments,
# which ruff reads as redefinitions (F811).
from .test_e2e import _close_thread_connections, agents, api, daphne, docker_template, launch, leader_of, session_where  # noqa: F401

CLAIM_ON = {"STREAMSPACE_DOCKER_DAEMON_CLAIM": "enforce", "STREAMSPACE_DOCKER_PULL": "never"}


def claim_holder(docker_client) -> str | None:
    try:
        return docker_client.volumes.get(CLAIM_VOLUME).attrs["Labels"]["streamspace.managed-by"]
    except docker.errors.NotFound:
        return None


@pytest.fixture
def free_daemon(docker_client):
    """The engine without a live claim; the claims the test makes are removed after it."""
    holder = claim_holder(docker_client)
    if holder and docker_client.containers.list(all=True, filters={"label": f"streamspace.managed-by={holder}"}):
        pytest.skip(f"agent {holder} manages this Docker daemon; the claim tests need it unclaimed")
    ours: list[str] = []
    yield ours
    if claim_holder(docker_client) in ours:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            docker_client.volumes.get(CLAIM_VOLUME).remove()


@pytest.mark.docker
@pytest.mark.slow
async def test_one_agent_per_daemon_is_enforced(free_daemon, docker_client, docker_agent_id, tmp_path):
    other_id = f"{docker_agent_id}-other"
    free_daemon += [docker_agent_id, other_id]
    async with FakeControlPlane(heartbeat_interval_s=1) as cp:
        first = await spawn_agent(
            cp.url, cp.token, instance_id="a", agent_id=docker_agent_id, platform="docker",
            data_dir=tmp_path / "a", env=CLAIM_ON,
        )  # fmt: skip
        try:
            await cp.wait_for(lambda: any(link.register.instance_id == "a" for link in cp.links), timeout=30)
            assert claim_holder(docker_client) == docker_agent_id
            # the claiming agent has a session on the daemon
            backend = DockerBackend(agent_id=docker_agent_id, data_dir=tmp_path / "x", options={"pull": "never"})
            spec = SessionSpec.parse({"image": TEST_IMAGE, "user": docker_agent_id, "persistent_home": False})
            session_id = f"claim-{secrets.token_hex(4)}"
            assert (await backend.start(session_id, spec)).state == "running"

            refused = await spawn_agent(
                cp.url, cp.token, instance_id="intruder", agent_id=other_id, platform="docker",
                data_dir=tmp_path / "intruder", env=CLAIM_ON,
            )  # fmt: skip
            assert await asyncio.wait_for(refused.proc.wait(), 30) == 2
            assert f"managed by agent {docker_agent_id!r}" in refused.log()
            assert f"docker volume rm {CLAIM_VOLUME}" in refused.log()
            assert not any(link.register.instance_id == "intruder" for link in cp.links)

            replica = await spawn_agent(
                cp.url, cp.token, instance_id="b", agent_id=docker_agent_id, platform="docker",
                data_dir=tmp_path / "b", env=CLAIM_ON,
            )  # fmt: skip
            await cp.wait_for(lambda: any(link.register.instance_id == "b" for link in cp.links), timeout=30)
            await replica.stop()

            # once the claiming agent has nothing left on the daemon, its claim is stale
            await backend.stop(session_id, spec)
            await backend.close()
            await first.stop()
            taker = await spawn_agent(
                cp.url, cp.token, instance_id="taker", agent_id=other_id, platform="docker",
                data_dir=tmp_path / "taker", env=CLAIM_ON,
            )  # fmt: skip
            await cp.wait_for(lambda: any(link.register.instance_id == "taker" for link in cp.links), timeout=30)
            assert claim_holder(docker_client) == other_id
            await taker.stop()
        finally:
            await first.stop()


@pytest.mark.docker
async def test_replicas_elect_on_a_key_derived_from_their_daemon(docker_client, docker_agent_id, tmp_path):
    backend = DockerBackend(agent_id=docker_agent_id, data_dir=tmp_path, options={"daemon_claim": "off"})
    try:
        lease = LeaseConfig(enabled=True, backend="redis", lease_key="docker-agent-leader", redis_url="redis://x")
        scoped = await backend.prepare(lease)
    finally:
        await backend.close()
    assert scoped.lease_key == f"docker-agent-leader-{daemon_key(docker_client.info()['ID'])}"
    assert claim_holder(docker_client) != docker_agent_id  # "off" claims nothing


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
async def test_two_hosts_are_two_agents_and_the_control_plane_places_sessions_on_both(
    api,  # noqa: F811
    agents,  # noqa: F811
    docker_template,  # noqa: F811
    docker_agent_id,
    docker_client,
):
    host_a, host_b = f"{docker_agent_id}-host-a", f"{docker_agent_id}-host-b"
    try:
        for host in (host_a, host_b):
            _agent, token = await sync_to_async(create_agent)(host, "docker")
            await agents(token, host, agent_id=host)
            await until(sync_to_async(lambda host=host: leader_of(host)), what=f"{host} registered")
        first = await launch(api, docker_template.slug)
        body = await session_where(api, first, state="running")
        second = await launch(api, docker_template.slug)  # the other agent is less loaded now
        other = await session_where(api, second, state="running")
        assert {body["agent_id"], other["agent_id"]} == {host_a, host_b}
        for session in (body, other):  # each host's agent runs its own sessions
            container = docker_client.containers.get(f"streamspace-{session['id']}")
            assert container.labels["streamspace.managed-by"] == session["agent_id"]
    finally:
        for host in (host_a, host_b):
            for container in docker_client.containers.list(
                all=True, filters={"label": f"streamspace.managed-by={host}"}
            ):
                container.remove(force=True)

"""Session isolation on a real Docker engine, tested from inside real session containers
(the local test image has busybox ``nc`` and ``wget``): a session cannot open a connection to
another session's container, nor to the host's PostgreSQL and Redis ports, while the agent
and the proxy reach it; nothing is published on the host; capabilities are dropped,
``no-new-privileges`` is on, and a read-only root keeps only the home and scratch writable.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest

from agent_runtime.backends.base import SessionSpec
from agent_runtime.backends.docker import DockerBackend
from agent_runtime.backends.docker_networks import container_id_from_mountinfo, subnet_pool
from tests.support.docker import TEST_IMAGE

pytestmark = pytest.mark.docker

# Exit 0 when a TCP connection to $1:$2 opens within 3 s (nc then waits on the open socket
# until `timeout` ends it), 1 when it is refused or times out.
CONNECTS = 'timeout 4 nc -w 3 "$1" "$2" </dev/null; rc=$?; [ $rc = 0 ] || [ $rc -ge 124 ]'


@pytest.fixture
async def backend(docker_agent_id, tmp_path):
    backend = DockerBackend(agent_id=docker_agent_id, data_dir=tmp_path, options={"stop_timeout": "2", "pull": "never"})
    yield backend
    await backend.close()


def spec_for(agent_id: str, **overrides) -> SessionSpec:
    base = {"image": TEST_IMAGE, "user": agent_id, "template": "test", "memory_mb": 64, "persistent_home": False,
            "streaming_port": 8080}  # fmt: skip
    return SessionSpec.parse({**base, **overrides})


async def ready(backend, session_id: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = await backend.status(session_id)
        if item.streaming_ready:
            return item
        await asyncio.sleep(0.1)
    raise AssertionError(f"{session_id} never became ready: {item}")


def connects(container, host: str, port: int) -> bool:
    code, _ = container.exec_run(["sh", "-c", CONNECTS, "connects", host, str(port)])
    return code == 0


def gateway_of(container) -> str:
    (network,) = container.attrs["NetworkSettings"]["Networks"].values()
    return network["Gateway"]


async def test_a_session_reaches_neither_another_session_nor_postgres_nor_redis(
    backend, docker_client, docker_agent_id, tmp_path
):
    sid_a, sid_b = f"{docker_agent_id}-a", f"{docker_agent_id}-b"
    await backend.start(sid_a, spec_for(docker_agent_id))
    await backend.start(sid_b, spec_for(docker_agent_id))
    a_item, b_item = await ready(backend, sid_a), await ready(backend, sid_b)
    a = docker_client.containers.get(f"streamspace-{sid_a}")
    b_host, b_port = b_item.endpoint.split(":")
    a_host, _ = a_item.endpoint.split(":")

    assert connects(a, a_host, 8080)  # the probe works: its own port answers
    assert not connects(a, b_host, int(b_port))  # another session's container
    gateway = gateway_of(a)  # the host, as the session sees it
    assert not connects(a, gateway, 5432)  # PostgreSQL
    assert not connects(a, gateway, 6379)  # Redis

    # The agent (this process, on the host) and so the proxy's direct route reach both.
    for endpoint in (a_item.endpoint, b_item.endpoint):
        with urllib.request.urlopen(f"http://{endpoint}/", timeout=5) as response:
            assert b"streamspace test session" in response.read()
    for sid in (sid_a, sid_b):
        container = docker_client.containers.get(f"streamspace-{sid}")
        assert not container.attrs["HostConfig"]["PortBindings"]


async def test_on_a_shared_network_sessions_would_reach_each_other(docker_client, docker_agent_id, tmp_path):
    """The control for the test above: the same probe sees a neighbour on a shared network."""
    network = docker_client.networks.create(
        f"{docker_agent_id}-shared", labels={"streamspace.managed-by": docker_agent_id}
    )
    shared = DockerBackend(
        agent_id=docker_agent_id,
        data_dir=tmp_path,
        options={"pull": "never", "isolation": "shared", "network": network.name, "stop_timeout": "2"},
    )
    try:
        await shared.start("shared-a", spec_for(docker_agent_id))
        await shared.start("shared-b", spec_for(docker_agent_id))
        await ready(shared, "shared-a")
        b_item = await ready(shared, "shared-b")
        a = docker_client.containers.get("streamspace-shared-a")
        host, port = b_item.endpoint.split(":")
        assert connects(a, host, int(port))
    finally:
        await shared.close()


async def test_confinement_of_a_session_container(backend, docker_client, docker_agent_id):
    sid = f"{docker_agent_id}-c"
    spec = spec_for(docker_agent_id, read_only_root=True, shm_size_mb=256, stream_secret="s" * 43)
    await backend.start(sid, spec)
    await ready(backend, sid)
    container = docker_client.containers.get(f"streamspace-{sid}")
    host = container.attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and "NET_RAW" not in (host["CapAdd"] or [])
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["ReadonlyRootfs"] is True and host["ShmSize"] == 256 * 1024 * 1024

    def run(script: str) -> tuple[int, str]:
        code, output = container.exec_run(["sh", "-c", script])
        return code, output.decode().strip()

    assert run("grep NoNewPrivs /proc/self/status")[1].split() == ["NoNewPrivs:", "1"]
    assert run("touch /root-file")[0] != 0  # the root file system is read-only
    assert run("touch /tmp/scratch && touch /home/user/file")[0] == 0  # scratch and home are not
    assert run("df -m /dev/shm | tail -1")[1].split()[1] == "256"
    assert run("echo $STREAMSPACE_STREAM_SECRET")[1] == "s" * 43


async def test_a_new_session_network_takes_a_free_subnet(backend, docker_client, docker_agent_id):
    """Sessions get /28s of the agent's pool, never an overlapping one."""
    sids = [f"{docker_agent_id}-n{i}" for i in range(3)]
    for sid in sids:
        await backend.start(sid, spec_for(docker_agent_id))
    subnets = set()
    for sid in sids:
        network = docker_client.networks.get(f"streamspace-session-{sid}")
        (config,) = network.attrs["IPAM"]["Config"]
        subnets.add(config["Subnet"])
        assert network.attrs["Labels"]["streamspace.managed-by"] == docker_agent_id
    assert len(subnets) == 3 and all(s.startswith("10.213.") and s.endswith("/28") for s in subnets)


def test_subnet_pool_and_container_id_parsing():
    assert len(subnet_pool("10.213.0.0/16")) == 4096
    with pytest.raises(Exception, match="subnet_prefix"):
        subnet_pool("10.213.0.0/16", 30)
    with pytest.raises(Exception, match="subnet_pool"):
        subnet_pool("10.213.0.1/16")
    line = "512 498 0:30 /var/lib/docker/containers/" + "ab" * 32 + "/hostname /etc/hostname rw - ext4 /dev/sda1 rw"
    assert container_id_from_mountinfo(line) == "ab" * 32
    assert container_id_from_mountinfo("25 1 0:22 / / rw - overlay overlay rw") is None

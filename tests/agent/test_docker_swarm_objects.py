"""The Swarm mode's pure builders and readers, the Swarm lease's names, the daemon's lease
scope: plain dicts in, plain dicts out (no engine)."""

from __future__ import annotations

import asyncio

import pytest

from agent_runtime.backends import docker_swarm_objects as swarm
from agent_runtime.backends.base import BackendError, SessionSpec
from agent_runtime.backends.docker_daemon import daemon_key, daemon_lease, refusal
from agent_runtime.backends.docker_objects import home_volume_name
from agent_runtime.config import ConfigError, LeaseConfig
from agent_runtime.leader.swarm import is_conflict, lease_service_name


def spec(**overrides) -> SessionSpec:
    base = {"image": "streamspace-test-session:latest", "user": "alice", "template": "t", "streaming_port": 8080}
    return SessionSpec.parse({**base, **overrides})


def task(state: str, created: str = "2026-01-01T00:00:01Z", **status) -> dict:
    return {"ID": f"t-{created}", "CreatedAt": created, "NodeID": "n1", "Status": {"State": state, **status}}


def test_service_config_carries_the_session_contract():
    config = swarm.service_config(
        "s1",
        spec(cpu_millicores=500, memory_mb=64, env={"A": "1"}, command=["/bin/sh", "-c", "x"]),
        agent_id="ag",
        stop_timeout=5,
    )
    assert config["name"] == "streamspace-s1"
    assert config["labels"] == config["container_labels"]
    assert config["labels"]["streamspace.managed-by"] == "ag"
    assert config["labels"]["streamspace.session-id"] == "s1"
    assert config["labels"]["streamspace.home-volume"] == home_volume_name("alice")
    assert config["mode"] == {"Replicated": {"Replicas": 1}}
    assert config["restart_policy"]["Condition"] == "none"  # a failed task stays visible
    assert config["resources"] == {"Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 64 * 1024 * 1024}}
    assert config["args"] == ["/bin/sh", "-c", "x"]  # replaces CMD, as the plain mode's command does
    assert "A=1" in config["env"] and "STREAMSPACE_SESSION_ID=s1" in config["env"]
    assert config["endpoint_spec"]["Ports"] == [{"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host"}]
    assert config["stop_grace_period"] == 5 * swarm.NANO
    (home,) = config["mounts"]
    assert home["Source"] == home_volume_name("alice") and home["Target"] == "/home/user"
    assert home["VolumeOptions"]["Labels"]["streamspace.user"] == "alice"
    assert "DriverConfig" not in home["VolumeOptions"]
    assert config["constraints"] == []


def test_a_local_home_pins_the_service_to_its_node_and_a_shared_driver_does_not():
    local = swarm.service_config("s1", spec(), agent_id="ag", home_node="node-7", constraints=["node.role==worker"])
    assert local["constraints"] == ["node.role==worker", "node.id==node-7"]
    assert local["labels"][swarm.LABEL_HOME_NODE] == "node-7"
    shared = swarm.service_config("s1", spec(), agent_id="ag", home_node="node-7", home_volume_driver="nfs")
    assert shared["constraints"] == []
    assert shared["mounts"][0]["VolumeOptions"]["DriverConfig"] == {"Name": "nfs"}


def test_unpublished_sessions_and_template_volumes():
    config = swarm.service_config(
        "s1",
        spec(persistent_home=False, volume_mounts=[{"name": "data set", "mount_path": "/data", "read_only": True}]),
        agent_id="ag",
        publish=False,
    )
    assert config["endpoint_spec"]["Ports"] == []
    assert config["mounts"] == [{"Target": "/data", "Source": "data_set", "Type": "volume", "ReadOnly": True}]
    assert "streamspace.home-volume" not in config["labels"]


@pytest.mark.parametrize("bad", [{"image": ""}, {"image": "UPPER/case"}, {"user": ""}])
def test_bad_specs_are_refused_with_a_reason(bad):
    with pytest.raises(BackendError):
        swarm.service_config("s1", spec(**bad), agent_id="ag")


def test_states_follow_replicas_and_the_newest_task():
    running = {"Spec": {"Mode": {"Replicated": {"Replicas": 1}}}}
    hibernated = {"Spec": {"Mode": {"Replicated": {"Replicas": 0}}}}
    assert swarm.session_state(hibernated, [task("running")]) == "hibernated"
    assert swarm.session_state(running, []) == "starting"
    assert swarm.session_state(running, [task("preparing")]) == "starting"
    assert swarm.session_state(running, [task("running")]) == "running"
    assert swarm.session_state(running, [task("running"), task("failed", "2026-01-01T00:00:02Z")]) == "failed"
    assert (
        swarm.session_state(
            running, [task("rejected", "2026-01-01T00:00:01Z"), task("running", "2026-01-01T00:00:09Z")]
        )
        == "running"
    )
    updating = {**running, "UpdateStatus": {"State": "updating"}}
    assert swarm.session_state(updating, [task("shutdown")]) == "starting"


def test_failures_say_what_swarm_said():
    rejected = task("rejected", Err="No such image: nope:latest", ContainerStatus={"ContainerID": "", "ExitCode": 0})
    assert swarm.task_exit_code(rejected) is None
    assert "No such image: nope:latest" in swarm.task_failure(rejected)
    exited = task("failed", Err="task: non-zero exit (3)", ContainerStatus={"ContainerID": "c", "ExitCode": 3})
    assert swarm.task_exit_code(exited) == 3
    assert swarm.task_failure(exited).startswith("The container exited with code 3.")
    assert swarm.task_exit_code(task("running", ContainerStatus={"ContainerID": "c", "ExitCode": 0})) is None


def test_published_port_of_a_task():
    t = task("running", PortStatus={"Ports": [{"TargetPort": 8080, "PublishedPort": 32768, "PublishMode": "host"}]})
    assert swarm.published_port(t, 8080) == 32768
    assert swarm.published_port(t, 9000) is None
    assert swarm.published_port(None, 8080) is None


def test_only_an_active_manager_runs_the_swarm_mode():
    assert (
        swarm.require_manager({"Swarm": {"LocalNodeState": "active", "ControlAvailable": True, "NodeID": "n"}}) == "n"
    )
    with pytest.raises(BackendError, match="docker swarm init"):
        swarm.require_manager({"Swarm": {"LocalNodeState": "inactive"}})
    with pytest.raises(BackendError, match="worker"):
        swarm.require_manager({"Swarm": {"LocalNodeState": "active", "ControlAvailable": False}})


def test_lease_service_names_are_valid_and_distinct():
    a, b = lease_service_name("docker-agent-leader"), lease_service_name("Docker_Agent_Leader")
    assert a.startswith("streamspace-lease-docker-agent-leader-") and a != b
    long = lease_service_name("x" * 300)
    assert len(long) <= 63 and long.replace("-", "").isalnum()
    assert is_conflict(Exception("rpc error: code = Unknown desc = update out of sequence"))
    assert not is_conflict(Exception("connection refused"))


def test_the_lease_of_docker_replicas_is_scoped_to_their_daemon():
    lease = LeaseConfig(enabled=True, backend="redis", lease_key="docker-agent-leader", redis_url="redis://x")
    one, two = daemon_lease(lease, "AAAA:BBBB"), daemon_lease(lease, "CCCC:DDDD")
    assert one.lease_key == f"docker-agent-leader-{daemon_key('AAAA:BBBB')}"
    assert one.lease_key != two.lease_key and one.lease_duration == lease.lease_duration
    assert "docker volume rm streamspace-daemon-claim" in refusal("host-a", "host-b", "AAAA:BBBB")


def test_swarm_is_an_ha_backend_and_typos_are_refused(tmp_path):
    assert LeaseConfig.from_env("docker", tmp_path, {"HA_BACKEND": "swarm"}).backend == "swarm"
    with pytest.raises(ConfigError, match="swarm"):
        LeaseConfig.from_env("docker", tmp_path, {"HA_BACKEND": "swram"})


def test_an_unknown_docker_mode_is_refused(tmp_path):
    from agent_runtime.backends.docker import DockerBackend
    from agent_runtime.backends.docker_swarm import DockerSwarmBackend

    with pytest.raises(BackendError, match="plain, swarm"):
        DockerBackend(agent_id="a", data_dir=tmp_path, options={"mode": "kubernetes"})
    with pytest.raises(BackendError, match="daemon_claim"):
        DockerBackend(agent_id="a", data_dir=tmp_path, options={"daemon_claim": "maybe"})
    assert isinstance(DockerBackend(agent_id="a", data_dir=tmp_path, options={"mode": "swarm"}), DockerSwarmBackend)
    assert type(DockerBackend(agent_id="a", data_dir=tmp_path, options={})) is DockerBackend


async def test_an_agent_started_before_its_engine_waits_for_it(tmp_path, monkeypatch, caplog):
    from agent_runtime.backends.docker import DockerBackend

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine-here.sock")
    backend = DockerBackend(agent_id="a", data_dir=tmp_path, options={"mode": "swarm"})
    try:
        with pytest.raises(TimeoutError):  # still waiting, not refusing: the engine may come up
            await asyncio.wait_for(backend.prepare(LeaseConfig()), 1.0)
    finally:
        await backend.close()
    assert "the docker engine does not answer; waiting" in caplog.text

"""The Docker backend's pure builders, tested as dicts (kubespawner objects.py style)."""

from __future__ import annotations

import pytest

from agent_runtime.backends import docker_objects as objects
from agent_runtime.backends.base import BackendError, SessionSpec

ALICE_HOME = "streamspace-home-alice-2bd806c97f0e00af"  # sha256("alice")[:16]


def spec(**overrides) -> SessionSpec:
    base = {"image": "registry.local/xfce:1", "user": "alice", "template": "xfce", "cpu_millicores": 1500,
            "memory_mb": 2048, "persistent_home": True, "streaming_port": 3000, "env": {"A": "1"}}  # fmt: skip
    return SessionSpec.parse({**base, **overrides})


def test_container_config():
    config = objects.container_config("abc123", spec(), agent_id="docker-1", publish_host="127.0.0.1")
    assert config == {
        "image": "registry.local/xfce:1",
        "name": "streamspace-abc123",
        "hostname": "ss-abc123",
        "labels": {
            "streamspace.session-id": "abc123",
            "streamspace.user": "alice",
            "streamspace.template": "xfce",
            "streamspace.managed-by": "docker-1",
            "streamspace.streaming-port": "3000",
            "streamspace.home-volume": ALICE_HOME,
        },
        "environment": {
            "A": "1",
            "STREAMSPACE_SESSION_ID": "abc123",
            "STREAMSPACE_USER": "alice",
            "STREAMSPACE_STREAMING_PORT": "3000",
        },  # fmt: skip
        "network": "streamspace",
        "volumes": {ALICE_HOME: {"bind": "/home/user", "mode": "rw"}},
        "detach": True,
        "init": True,
        "restart_policy": {"Name": "no"},
        "ports": {"3000/tcp": ("127.0.0.1", None)},
        "nano_cpus": 1_500_000_000,
        "mem_limit": "2048m",
        "memswap_limit": "2048m",
        "cap_drop": ["ALL"],
        "cap_add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL"],
        "security_opt": ["no-new-privileges:true"],
    }


def test_home_only_when_persistent_and_mount_path_configurable():
    assert objects.container_config("s", spec(persistent_home=False), agent_id="a")["volumes"] == {}
    config = objects.container_config("s", spec(), agent_id="a", home_mount_path="/config")
    assert config["volumes"] == {ALICE_HOME: {"bind": "/config", "mode": "rw"}}
    per_spec = objects.container_config("s", spec(home_mount_path="/data"), agent_id="a")
    assert per_spec["volumes"][ALICE_HOME]["bind"] == "/data"


def test_network_mode_publishes_nothing():
    config = objects.container_config("s", spec(), agent_id="a", publish_host=None, network="mesh")
    assert config["ports"] == {} and config["network"] == "mesh"


def test_template_volumes_and_command():
    config = objects.container_config(
        "s",
        spec(volume_mounts=[{"name": "datasets", "mount_path": "/data", "read_only": True}], command=["run", "--x"]),
        agent_id="a",
    )
    assert config["volumes"]["datasets"] == {"bind": "/data", "mode": "ro"}
    assert config["command"] == ["run", "--x"]
    with pytest.raises(BackendError, match="absolute"):
        objects.container_config("s", spec(volume_mounts=[{"name": "x", "mount_path": "rel"}]), agent_id="a")


def test_no_limits_when_unset():
    config = objects.container_config("s", spec(cpu_millicores=0, memory_mb=0), agent_id="a")
    assert "nano_cpus" not in config and "mem_limit" not in config


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "streamspace-test-session:latest",
        "ghcr.io/linuxserver/webtop:ubuntu-xfce",
        "localhost:5000/a/b:1.2",
        "repo@sha256:" + "a" * 64,
    ],  # fmt: skip
)
def test_valid_images(image):
    assert objects.validate_image(image) == image


@pytest.mark.parametrize("image", ["", "UPPER/case", "has space", "trailing:", "a//b", "-leading", "x" * 300])
def test_invalid_images(image):
    with pytest.raises(BackendError):
        objects.validate_image(image)


def test_volume_names_are_docker_safe():
    assert objects.home_volume_name("alice@example.com") == "streamspace-home-alice-example-com-ff8d9819fc0e12bf"
    assert objects.home_volume_name("@@@").startswith("streamspace-home-user-")
    with pytest.raises(BackendError, match="missing 'user'"):
        objects.home_volume_name("")


def test_missing_user_is_a_clear_error():
    with pytest.raises(BackendError, match="missing 'user'"):
        objects.container_config("s", spec(user=""), agent_id="a")


def test_state_and_endpoint_from_inspect():
    attrs = {"State": {"Status": "running"},
             "NetworkSettings": {"Ports": {"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "49153"}]}}}  # fmt: skip
    assert objects.state_of(attrs) == "running"
    assert objects.published_endpoint(attrs, 8080) == "127.0.0.1:49153"
    assert objects.published_endpoint(attrs, 3000) is None
    assert objects.state_of({"State": {"Status": "exited"}}) == "hibernated"
    assert objects.state_of({"State": {"Status": "dead"}}) == "failed"


def test_stream_secrets_reach_the_container_env_only_when_set():
    config = objects.container_config("s", spec(stream_secret="full-s", stream_view_secret="view-s"), agent_id="a")
    assert config["environment"]["STREAMSPACE_STREAM_SECRET"] == "full-s"
    assert config["environment"]["STREAMSPACE_STREAM_VIEW_SECRET"] == "view-s"
    plain = objects.container_config("s", spec(), agent_id="a")["environment"]
    assert not {"STREAMSPACE_STREAM_SECRET", "STREAMSPACE_STREAM_VIEW_SECRET"} & plain.keys()
    # the template's env cannot replace them
    forged = spec(stream_secret="real", env={"STREAMSPACE_STREAM_SECRET": "forged"})
    assert objects.container_config("s", forged, agent_id="a")["environment"]["STREAMSPACE_STREAM_SECRET"] == "real"


def test_a_spec_never_shows_its_secrets():
    shown = repr(spec(stream_secret="full-s", stream_view_secret="view-s"))
    assert "full-s" not in shown and "view-s" not in shown and "[REDACTED]" in shown


def test_shm_size_and_read_only_root():
    assert "shm_size" not in objects.container_config("s", spec(), agent_id="a")
    assert objects.container_config("s", spec(shm_size_mb=1024), agent_id="a")["shm_size"] == "1024m"
    config = objects.container_config("s", spec(read_only_root=True), agent_id="a")
    assert config["read_only"] is True
    assert set(config["tmpfs"]) == {"/tmp", "/run"}  # the home is the persistent volume
    ephemeral = objects.container_config(
        "s", spec(read_only_root=True, persistent_home=False, home_mount_path="/config"), agent_id="a"
    )
    assert set(ephemeral["tmpfs"]) == {"/tmp", "/run", "/config"}
    assert "read_only" not in objects.container_config("s", spec(), agent_id="a")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("shm_size_mb", -1),
        ("shm_size_mb", 70000),
        ("home_mount_path", "home"),
        ("home_mount_path", "/"),
        ("stream_secret", 5),
        ("read_only_root", "yes"),
    ],  # fmt: skip
)
def test_bad_stream_fields_are_clear_errors(field, value):
    with pytest.raises(BackendError, match=field):
        spec(**{field: value})

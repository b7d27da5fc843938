"""The agent package: no Django, CLI flags and env, configuration parsing, backend discovery."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent_runtime.backends import available_backends, load_backend_class
from agent_runtime.backends.local import LocalBackend
from agent_runtime.cli import build_parser, config_from_args, main
from agent_runtime.config import ConfigError, LeaseConfig, connect_url, parse_duration

ROOT = Path(__file__).resolve().parents[2]


def test_agent_modules_do_not_import_django():
    modules = [
        "agent_runtime.cli",
        "agent_runtime.agent",
        "agent_runtime.connection",
        "agent_runtime.commands",
        "agent_runtime.backends.local",
        "agent_runtime.backends.docker",
        "agent_runtime.backends.docker_objects",
        "agent_runtime.leader.file",
        "agent_runtime.leader.redis",
        "agent_runtime.demo_app",
        "agent_runtime.desktop",
        "agent_runtime.protocol",
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "assert not leaked, leaked\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize(
    ("text", "seconds"), [("15s", 15.0), ("500ms", 0.5), ("2m", 120.0), ("1.5s", 1.5), ("3", 3.0), ("1h", 3600.0)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "fast", "-1s", "0s", "10 parsecs"])
def test_bad_durations_fail_loudly(text):
    with pytest.raises(ConfigError):
        parse_duration(text, name="LEASE_DURATION")


def test_connect_url_maps_schemes():
    assert connect_url("http://cp:8000") == "ws://cp:8000/api/v1/agents/connect"
    assert connect_url("https://cp.example/") == "wss://cp.example/api/v1/agents/connect"
    with pytest.raises(ConfigError):
        connect_url("ftp://cp")


def test_lease_config_defaults_and_validation(tmp_path):
    lease = LeaseConfig.from_env("docker", tmp_path, {})
    assert (lease.enabled, lease.backend, lease.lease_key) == (False, "file", "docker-agent-leader")
    assert (lease.lease_duration, lease.renew_deadline, lease.retry_period) == (15.0, 10.0, 2.0)
    env = {"ENABLE_HA": "true", "HA_BACKEND": "redis", "REDIS_URL": "redis://x/1", "LEASE_DURATION": "3s",
           "RENEW_DEADLINE": "2s", "RETRY_PERIOD": "500ms", "LEASE_KEY": "k"}  # fmt: skip
    lease = LeaseConfig.from_env("docker", tmp_path, env)
    assert (lease.enabled, lease.backend, lease.lease_key, lease.retry_period) == (True, "redis", "k", 0.5)
    with pytest.raises(ConfigError, match="RENEW_DEADLINE"):
        LeaseConfig.from_env("docker", tmp_path, {"LEASE_DURATION": "5s", "RENEW_DEADLINE": "10s"})
    with pytest.raises(ConfigError, match="REDIS_URL"):
        LeaseConfig.from_env("docker", tmp_path, {"ENABLE_HA": "1", "HA_BACKEND": "redis"})
    with pytest.raises(ConfigError, match="not available"):
        LeaseConfig.from_env("docker", tmp_path, {"ENABLE_HA": "1", "HA_BACKEND": "zookeeper"})


def test_flags_and_env(tmp_path):
    env = {"PLATFORM": "local", "CONTROL_PLANE_URL": "http://cp:1", "AGENT_TOKEN": "tok", "AGENT_ID": "env-id",
           "STREAMSPACE_LOCAL_EXTRA": "x"}  # fmt: skip
    args = build_parser(env).parse_args(["--data-dir", str(tmp_path), "--backend-option", "a=b"])
    config = config_from_args(args, env)
    assert (config.platform, config.control_plane, config.token, config.agent_id) == (
        "local",
        "http://cp:1",
        "tok",
        "env-id",
    )
    assert config.backend_options == {"extra": "x", "a": "b"}
    assert config.instance_id and config.data_dir == tmp_path
    args = build_parser(env).parse_args(["--agent-id", "flag-id", "--token", "t2", "--instance-id", "i9"])
    config = config_from_args(args, env)
    assert (config.agent_id, config.token, config.instance_id) == ("flag-id", "t2", "i9")


def test_kubernetes_without_a_cluster_is_a_clear_error(capsys, monkeypatch, tmp_path):
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config either
    code = main(
        ["--platform", "kubernetes", "--control-plane", "http://cp", "--token", "t", "--data-dir", str(tmp_path)]
    )
    assert code == 2
    assert "cannot reach Kubernetes: no usable kubeconfig or in-cluster service account" in capsys.readouterr().err


def test_missing_flags_are_named(capsys, monkeypatch):
    for var in ("PLATFORM", "CONTROL_PLANE_URL", "AGENT_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    assert main(["--platform", "local"]) == 2
    assert "--control-plane, --token" in capsys.readouterr().err


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "streamspace-agent"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--control-plane" in out.stdout


def test_backends_found_by_entry_point_and_dotted_path():
    assert {"docker", "local"} <= set(available_backends())
    assert load_backend_class("local") is LocalBackend
    assert load_backend_class("agent_runtime.backends.local:LocalBackend") is LocalBackend
    with pytest.raises(ConfigError, match="not a streamspace Backend"):
        load_backend_class("agent_runtime.config:LeaseConfig")
    with pytest.raises(ConfigError, match="cannot load"):
        load_backend_class("no.such.module:Thing")

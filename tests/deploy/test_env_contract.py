"""The helper that reads env var names from the code finds what the code really reads."""

from __future__ import annotations

from tests.deploy.conftest import code_env_vars


def test_finds_settings_agent_and_backend_variables():
    names = code_env_vars()
    # streamspace/settings.py (envstr/envint/envbool/envlist)
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "POD_NAME", "POD_URL"} <= names
    assert {"WEBHOOK_MAX_ATTEMPTS", "STREAMSPACE_PUBLIC_URL", "CELERY_BROKER_URL"} <= names
    assert {"REDIS_SENTINELS", "REDIS_SENTINEL_MASTER"} <= names  # read by settings and the agent alike
    # agent_runtime/cli.py flags and config.py HA variables
    assert {"PLATFORM", "CONTROL_PLANE_URL", "AGENT_TOKEN", "AGENT_ID", "INSTANCE_ID"} <= names
    assert {"ENABLE_HA", "HA_BACKEND", "FILE_LOCK_PATH", "LEASE_KEY", "LEASE_DURATION", "RENEW_DEADLINE"} <= names
    assert {"STREAMSPACE_DOCKER_NETWORK", "STREAMSPACE_DOCKER_PUBLISH_HOST"} <= names
    assert "MADE_UP_VARIABLE" not in names


def test_every_daphne_invocation_keeps_websockets_open():
    """make run passes --websocket_timeout -1 (daphne's default closes sockets after 24 h);
    every deployment must too."""
    from tests.deploy.conftest import DEPLOY

    files = [
        DEPLOY / "docker" / "Dockerfile.control-plane",
        DEPLOY / "systemd" / "streamspace-control-plane.service",
        DEPLOY / "helm" / "streamspace" / "templates" / "deployment-control-plane.yaml",
    ]
    for path in files:
        text = path.read_text()
        assert "streamspace.serve" in text  # daphne through the launcher
        flat = " ".join(text.replace('"', " ").replace("- ", " ").split())
        assert "--websocket_timeout -1" in flat, path.name
        # daphne's --proxy-headers believes the leftmost X-Forwarded-For, which clients write;
        # the client address comes from STREAMSPACE_TRUSTED_PROXIES instead (streamspace/serve.py).
        commands = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        assert "--proxy-headers" not in "\n".join(commands), path.name


def test_sentinel_variables_are_read_on_both_sides():
    """The control plane (settings) and the agent (its lease config) each read the Sentinel
    variables themselves; neither depends on the other's process to parse them."""
    from tests.deploy.conftest import REPO

    settings = (REPO / "streamspace" / "settings.py").read_text()
    agent = (REPO / "agent_runtime" / "config.py").read_text()
    for name in ("REDIS_SENTINELS", "REDIS_SENTINEL_MASTER"):
        assert f'envstr("{name}")' in settings, name
        assert f'env.get("{name}"' in agent, name

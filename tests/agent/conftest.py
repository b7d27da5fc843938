"""Fixtures for the agent tests: a real Docker engine (cleaned up by label), failure dumps."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEST_IMAGE = "streamspace-test-session:latest"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _unavailable(message: str):
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_client():
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:  # no engine here
        _unavailable(f"needs a Docker engine (scripts/ensure-docker.sh): {exc}")
    build = subprocess.run([str(ROOT / "tests/images/build.sh")], capture_output=True, text=True, timeout=300)
    if build.returncode != 0:
        pytest.fail(f"building {TEST_IMAGE} failed:\n{build.stdout}\n{build.stderr}")
    yield client
    client.close()


@pytest.fixture
def docker_agent_id(docker_client, request):
    """A unique agent id; every container it labels and every volume it names is removed after."""
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

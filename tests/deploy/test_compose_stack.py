"""deploy/docker-compose.yml brought up for real: PostgreSQL, Redis, two control planes behind
nginx, Celery and two agent replicas, with images built on this machine (no pulls:
tests/deploy/compose_images.sh, and tests/deploy/stack-override.yml for the three
third-party images). A user launches a session through nginx; the session reaches
``streaming_ready`` with nothing published on the host, its page and a WebSocket echo come
back through nginx and the proxy (the agent's tunnel), and from inside the session container
PostgreSQL, Redis and the control planes cannot be reached.

Debian's docker-compose (1.29, scripts/ensure-deploy-tools.sh) predates the top-level ``name``
key, so the file is given without it and the project is named with ``-p``; ``--compatibility``
makes it honour ``deploy.replicas``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.deploy.conftest import DEPLOY, require_tool
from tests.support.docker import TEST_IMAGE, remove_networks
from tests.support.ports import free_port
from tests.support.waits import wait_until

# A cold run builds the images first (tests/deploy/compose_images.sh, several minutes once);
# a warm one spends most of its time in `up` (migrations, the control planes' start).
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1800)]

HERE = Path(__file__).resolve().parent
PROJECT = f"streamspace-stream-{secrets.token_hex(3)}"
AGENT_ID = f"{PROJECT}-agent"
PASSWORD = "pw-" + secrets.token_urlsafe(12)
# Exit 0 when a TCP connection to $1:$2 opens within 3 s, 1 when refused or timed out.
CONNECTS = 'timeout 4 nc -w 3 "$1" "$2" </dev/null; rc=$?; [ $rc = 0 ] || [ $rc -ge 124 ]'


class Stack:
    def __init__(self, command: list[str], env: dict[str, str], port: int) -> None:
        self.command, self.env, self.port = command, env, port
        self.url = f"http://127.0.0.1:{port}"

    def compose(self, *args: str, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.command, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def manage(self, *args: str) -> str:
        return self.compose("exec", "-T", "control-plane-1", "python", "manage.py", *args, timeout=120).stdout

    def container(self, docker_client, service: str):
        (found,) = docker_client.containers.list(
            filters={"label": [f"com.docker.compose.project={PROJECT}", f"com.docker.compose.service={service}"]}
        )
        return found


def build_images() -> dict[str, str]:
    result = subprocess.run([str(HERE / "compose_images.sh")], capture_output=True, text=True, timeout=1500)
    if result.returncode != 0:
        pytest.fail(f"building the stack's images failed:\n{result.stderr[-4000:]}")
    return dict(line.split("=", 1) for line in result.stdout.split())


@pytest.fixture(scope="module")
def stack(docker_client, tmp_path_factory) -> Iterator[Stack]:
    compose = require_tool("docker-compose")
    images = build_images()
    workdir = tmp_path_factory.mktemp("compose")
    lines = (DEPLOY / "docker-compose.yml").read_text().splitlines(keepends=True)
    (workdir / "docker-compose.yml").write_text("".join(line for line in lines if not line.startswith("name:")))
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(workdir),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "AGENT_TOKEN": "ssa_" + secrets.token_urlsafe(32),
        "AGENT_ID": AGENT_ID,
        "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
        "HTTP_PORT": str(port),
        "EDGE_SUBNET": f"10.214.{secrets.randbelow(250) + 1}.0/24",
        "STREAMSPACE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{port}",
        "STREAMSPACE_CONTROL_PLANE_IMAGE": images["CONTROL_PLANE"],
        "STREAMSPACE_AGENT_IMAGE": images["AGENT"],
        "STREAMSPACE_STACK_BASE_IMAGE": images["BASE"],
        "LOG_LEVEL": "WARNING",
    }
    command = [compose, "--compatibility", "-p", PROJECT, "--project-directory", str(DEPLOY)]
    command += ["-f", str(workdir / "docker-compose.yml"), "-f", str(HERE / "stack-override.yml")]
    stack = Stack(command, env, port)
    try:
        # up waits for PostgreSQL, the migrations and both control planes to be healthy.
        stack.compose("up", "-d", "--no-build", timeout=900)
        wait_until(lambda: _answers(stack.url + "/nginx-health"), timeout=120, what="nginx")
        wait_until(lambda: _answers(stack.url + "/healthz"), timeout=120, what="the control planes")
        yield stack
    except BaseException:
        print(stack.compose("logs", "--no-color", "--tail=80", check=False).stdout[-20000:])
        raise
    finally:
        stack.compose("down", "-v", "--remove-orphans", "-t", "5", check=False, timeout=180)
        for container in docker_client.containers.list(
            all=True, filters={"label": f"streamspace.managed-by={AGENT_ID}"}
        ):
            container.remove(force=True)
        remove_networks(docker_client, AGENT_ID)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def connects(container, host: str, port: int) -> bool:
    code, _ = container.exec_run(["sh", "-c", CONNECTS, "connects", host, str(port)])
    return code == 0


def address(container, network_suffix: str) -> str:
    networks = container.attrs["NetworkSettings"]["Networks"]
    (name,) = [name for name in networks if name.endswith(network_suffix)]
    return networks[name]["IPAddress"]


def test_a_session_launched_through_nginx_streams(stack, docker_client):
    stack.manage(
        "shell",
        "-c",
        "from streamspace.accounts.models import User; from sessions_app.models import Template\n"
        f"User.objects.create_user('alice', password='{PASSWORD}')\n"
        "Template.objects.create(slug='stack-test', display_name='Stack test', "
        f"image='{TEST_IMAGE}', streaming_port=8080, default_memory_mb=64, default_cpu_millicores=250)",
    )
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        login = client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
        assert login.status_code == 200, login.text
        bearer = {"Authorization": f"Bearer {login.json()['access']}"}

        def agent_ready() -> bool:
            listed = client.get("/api/v1/templates/stack-test", headers=bearer).json()
            return listed["availability"]["available"]

        wait_until(agent_ready, timeout=60, what="the agent to connect")
        launched = client.post(
            "/api/v1/sessions", json={"template": "stack-test", "persistent_home": False}, headers=bearer
        )
        assert launched.status_code == 202, launched.text
        session_id = launched.json()["id"]

        def streaming() -> dict | None:
            body = client.get(f"/api/v1/sessions/{session_id}", headers=bearer).json()
            assert body["state"] not in ("failed", "stopped"), body
            return body if body["state"] == "running" and body["streaming_ready"] else None

        wait_until(streaming, timeout=90, interval=0.5, what="the session to stream")
        page = client.get(f"/api/v1/http/{session_id}/", headers=bearer)
        assert page.status_code == 200 and b"streamspace test session" in page.content

    ws_url = f"ws://127.0.0.1:{stack.port}/api/v1/http/{session_id}/"
    with ws_connect(ws_url, additional_headers=bearer, open_timeout=20) as ws:
        ws.send("hello through nginx")
        assert ws.recv(timeout=10).strip() == "hello through nginx"

    session = docker_client.containers.get(f"streamspace-{session_id}")
    assert list(session.attrs["NetworkSettings"]["Networks"]) == [f"streamspace-session-{session_id}"]
    assert not session.attrs["HostConfig"]["PortBindings"]
    own = address(session, session_id)
    assert connects(session, own, 8080)  # the probe works inside this container
    for service, port in (("postgres", 5432), ("redis", 6379), ("control-plane-1", 8000)):
        target = address(stack.container(docker_client, service), "_backend")
        assert not connects(session, target, port), f"a session reached {service}"
        assert not connects(session, service, port), f"a session reached {service} by name"
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        assert client.delete(f"/api/v1/sessions/{session_id}", headers=bearer).status_code == 202
    wait_until(
        lambda: not docker_client.networks.list(names=[f"streamspace-session-{session_id}"]),
        timeout=60,
        what="the session's network to go",
    )

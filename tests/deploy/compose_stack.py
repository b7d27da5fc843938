"""The compose deployment brought up for real, for tests/deploy/test_compose_stack.py and
tests/deploy/test_compose_sentinel.py: images built on this machine (no pulls:
tests/deploy/compose_images.sh, and tests/deploy/stack-override.yml for the third-party images),
the deployment's own files, and a user who launches sessions through nginx.

Debian's docker-compose (1.29, scripts/ensure-deploy-tools.sh) predates the top-level ``name``
key, so deploy/docker-compose.yml is given without it and the project is named with ``-p``;
``--compatibility`` makes it honour ``deploy.replicas``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.conftest import DEPLOY, require_tool
from tests.support.agent_logs import executions
from tests.support.docker import TEST_IMAGE, remove_networks
from tests.support.ports import free_port
from tests.support.waits import wait_until

HERE = Path(__file__).resolve().parent
TEMPLATE = "stack-test"


def project_name(kind: str) -> str:
    """A compose project of its own for each run: ``streamspace-cs-<kind>-<random>``."""
    return f"streamspace-cs-{kind}-{secrets.token_hex(3)}"


class Stack:
    """One compose project: its command line, the environment it was given and nginx's port."""

    def __init__(self, project: str, command: list[str], env: dict[str, str], port: int) -> None:
        self.project, self.command, self.env, self.port = project, command, env, port
        self.url = f"http://127.0.0.1:{port}"
        self.agent_id = env["AGENT_ID"]

    def compose(self, *args: str, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.command, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def manage(self, *args: str, service: str = "control-plane-1") -> str:
        return self.compose("exec", "-T", service, "python", "manage.py", *args, timeout=120).stdout

    def print_logs(self) -> None:
        print(self.compose("logs", "--no-color", "--tail=80", check=False).stdout[-30000:])

    def containers(self, docker_client: Any, service: str, *, stopped: bool = False) -> list:
        """The service's running containers (and its stopped ones with ``stopped``)."""
        labels = [f"com.docker.compose.project={self.project}", f"com.docker.compose.service={service}"]
        return docker_client.containers.list(all=stopped, filters={"label": labels})

    def container(self, docker_client: Any, service: str):
        (found,) = self.containers(docker_client, service)
        return found


def build_images() -> dict[str, str]:
    result = subprocess.run([str(HERE / "compose_images.sh")], capture_output=True, text=True, timeout=1500)
    if result.returncode != 0:
        pytest.fail(f"building the stack's images failed:\n{result.stderr[-4000:]}")
    return dict(line.split("=", 1) for line in result.stdout.split())


@contextmanager
def compose_stack(
    request: pytest.FixtureRequest, docker_client: Any, workdir: Path, project: str, files: list[Path]
) -> Iterator[Stack]:
    """deploy/docker-compose.yml, then ``files`` in order (later files override earlier ones),
    up and answering through nginx; taken down with its volumes and the agent's sessions. The
    services' logs are printed when it failed to come up or a test that used it failed."""
    compose = require_tool("docker-compose")
    images = build_images()
    lines = (DEPLOY / "docker-compose.yml").read_text().splitlines(keepends=True)
    (workdir / "docker-compose.yml").write_text("".join(line for line in lines if not line.startswith("name:")))
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(workdir),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "AGENT_TOKEN": "ssa_" + secrets.token_urlsafe(32),
        "AGENT_ID": f"{project}-agent",
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
    command = [compose, "--compatibility", "-p", project, "--project-directory", str(DEPLOY)]
    command += ["-f", str(workdir / "docker-compose.yml")]
    for path in files:
        command += ["-f", str(path)]
    stack = Stack(project, command, env, port)
    try:
        # up waits for PostgreSQL, the migrations and both control planes to be healthy.
        stack.compose("up", "-d", "--no-build", timeout=900)
        wait_until(lambda: answers(stack.url + "/nginx-health"), timeout=120, what="nginx")
        wait_until(lambda: answers(stack.url + "/healthz"), timeout=120, what="the control planes")
        failed = request.session.testsfailed
        yield stack
        if request.session.testsfailed > failed:
            stack.print_logs()
    except BaseException:
        stack.print_logs()
        raise
    finally:
        stack.compose("down", "-v", "--remove-orphans", "-t", "5", check=False, timeout=180)
        for container in docker_client.containers.list(
            all=True, filters={"label": f"streamspace.managed-by={stack.agent_id}"}
        ):
            container.remove(force=True)
        remove_networks(docker_client, stack.agent_id)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


class User:
    """alice, signed in through nginx, launching sessions of the stack's test template."""

    def __init__(self, stack: Stack, client: httpx.Client, bearer: dict[str, str]) -> None:
        self.stack, self.client, self.bearer = stack, client, bearer

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path, headers=self.bearer)

    def agent_ready(self) -> bool:
        return self.get(f"/api/v1/templates/{TEMPLATE}").json()["availability"]["available"]

    def ask_launch(self) -> str:
        """The id of a session whose launch the API accepted; a 503 (a dependency such as Redis
        unavailable for a moment) is asked again, as the API's clients do."""

        def accepted() -> str | None:
            launched = self.client.post(
                "/api/v1/sessions", json={"template": TEMPLATE, "persistent_home": False}, headers=self.bearer
            )
            if launched.status_code == 503:
                return None
            assert launched.status_code == 202, launched.text
            return launched.json()["id"]

        return wait_until(accepted, timeout=120, interval=0.5, what="the API to accept a launch")

    def wait_streaming(self, session_id: str, timeout: float = 90) -> None:
        def streaming() -> bool:
            response = self.get(f"/api/v1/sessions/{session_id}")
            if response.status_code == 503:  # a dependency unavailable for a moment
                return False
            body = response.json()
            assert body["state"] not in ("failed", "stopped"), body
            return body["state"] == "running" and body["streaming_ready"]

        wait_until(streaming, timeout=timeout, interval=0.5, what=f"session {session_id} to stream")

    def launch(self, timeout: float = 90) -> str:
        session_id = self.ask_launch()
        self.wait_streaming(session_id, timeout)
        return session_id

    def stop(self, session_id: str) -> None:
        response = self.client.delete(f"/api/v1/sessions/{session_id}", headers=self.bearer)
        assert response.status_code == 202, response.text


@contextmanager
def signed_in(stack: Stack) -> Iterator[User]:
    """alice and the test template created with manage.py, alice signed in through nginx, and
    the agent connected (the template is available)."""
    password = "pw-" + secrets.token_urlsafe(12)
    stack.manage(
        "shell",
        "-c",
        "from streamspace.accounts.models import User; from sessions_app.models import Template\n"
        f"User.objects.create_user('alice', password='{password}')\n"
        f"Template.objects.create(slug='{TEMPLATE}', display_name='Stack test', "
        f"image='{TEST_IMAGE}', streaming_port=8080, default_memory_mb=64, default_cpu_millicores=250)",
    )
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        login = client.post("/api/v1/auth/login", json={"username": "alice", "password": password})
        assert login.status_code == 200, login.text
        user = User(stack, client, {"Authorization": f"Bearer {login.json()['access']}"})
        wait_until(user.agent_ready, timeout=60, what="the agent to connect")
        yield user


def commands_executed(stack: Stack, docker_client: Any) -> Counter:
    """``command_id`` → how many times the agent replicas' logs say they executed the command."""
    lines: list[str] = []
    for container in stack.containers(docker_client, "agent"):
        lines += container.logs().decode(errors="replace").splitlines()
    return executions(lines)

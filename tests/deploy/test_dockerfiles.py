"""deploy/docker: images cannot be built here (no base image can be pulled), so the Dockerfiles
are checked statically: hadolint, every COPY source present and not excluded by .dockerignore,
the commands they run present in the project's environment, and the HEALTHCHECK script run
for real against a local server."""

from __future__ import annotations

import fnmatch
import http.server
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import tomllib

import pytest

from tests.deploy.conftest import DEPLOY, REPO, VENV_BIN

DOCKERFILES = sorted((DEPLOY / "docker").glob("Dockerfile.*"))
HEALTHCHECK = DEPLOY / "docker" / "healthcheck.py"


def instructions(dockerfile) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def dockerignore_excludes(path: str) -> bool:
    excluded = False
    for pattern in (REPO / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.replace("**/", "")) for p in prefixes)
        if hit:
            excluded = not negate
    return excluded


def test_there_are_two_dockerfiles():
    assert [d.name for d in DOCKERFILES] == ["Dockerfile.agent", "Dockerfile.control-plane"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile):
    result = subprocess.run(
        [str(VENV_BIN / "hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_in_the_build_context(dockerfile):
    copies = [rest for keyword, rest in instructions(dockerfile) if keyword == "COPY"]
    assert copies
    for rest in copies:
        *sources, _dest = rest.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: missing"
            assert not dockerignore_excludes(source.rstrip("/")), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_secrets_and_local_state_out():
    for path in (".venv", ".streamspace", ".git", "deploy/.env", ".env", "tests", "agents_app/__pycache__"):
        assert dockerignore_excludes(path), path
    for path in ("requirements.txt", "streamspace", "agent_runtime", "deploy/docker/healthcheck.py", "static"):
        assert not dockerignore_excludes(path), path


def test_both_images_use_python_311_slim_and_a_numeric_non_root_user():
    for dockerfile in DOCKERFILES:
        steps = instructions(dockerfile)
        assert steps[0] == ("FROM", "python:3.11-slim")
        users = [rest for keyword, rest in steps if keyword == "USER"]
        assert users == ["10001:10001"]


def test_control_plane_image_commands_exist():
    steps = dict(instructions(DEPLOY / "docker" / "Dockerfile.control-plane"))
    assert "collectstatic" in " ".join(
        rest for k, rest in instructions(DEPLOY / "docker" / "Dockerfile.control-plane") if k == "RUN"
    )
    cmd = json.loads(steps["CMD"])
    assert "exec python -m streamspace.serve --bind 0.0.0.0" in cmd[-1]
    assert cmd[-1].endswith("streamspace.asgi:application")
    assert (VENV_BIN / "celery").is_file()
    # The launcher and what it runs on come with requirements.txt (no console script needed).
    assert importlib.util.find_spec("streamspace.serve") and importlib.util.find_spec("uvloop")
    module, _, attribute = cmd[-1].rsplit(" ", 1)[-1].partition(":")
    assert hasattr(importlib.import_module(module), attribute)
    assert json.loads(steps["HEALTHCHECK"].split("CMD", 1)[1]) == ["streamspace-healthcheck"]
    assert "COPY deploy/docker/healthcheck.py /usr/local/bin/streamspace-healthcheck" in [
        f"COPY {rest}" for k, rest in instructions(DEPLOY / "docker" / "Dockerfile.control-plane") if k == "COPY"
    ]
    assert os.access(HEALTHCHECK, os.X_OK)


def test_agent_image_installs_the_package_with_its_extras():
    steps = instructions(DEPLOY / "docker" / "Dockerfile.agent")
    assert ("ENTRYPOINT", '["streamspace-agent"]') in steps
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["streamspace-agent"] == "agent_runtime.cli:main"
    assert {"docker", "redis"} <= set(project["optional-dependencies"])
    run = " ".join(rest for k, rest in steps if k == "RUN")
    assert '".[docker,redis]"' in run
    pinned = set(re.findall(r"^([a-z]+)==", (REPO / "requirements.txt").read_text(), re.M))
    assert {"websockets", "msgspec", "httpx", "docker", "redis"} <= pinned  # the constraints grep finds them
    assert (VENV_BIN / "streamspace-agent").is_file()


# --- the HEALTHCHECK script, run as Docker runs it ----------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    allowed_host = "portal.example.com"

    def do_GET(self):
        ok = self.path == "/healthz" and self.headers["Host"] == self.allowed_host
        self.send_response(200 if ok else 400)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def run_healthcheck(port: int, allowed_hosts: str) -> int:
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "ALLOWED_HOSTS": allowed_hosts}
    return subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, timeout=30).returncode


def test_healthcheck_sends_an_allowed_host(server):
    assert run_healthcheck(server, "*,.portal.example.com,other.example.com") == 0
    assert run_healthcheck(server, "other.example.com") == 1  # Django would answer 400


def test_healthcheck_fails_when_nothing_listens(server):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    assert run_healthcheck(free_port, "portal.example.com") == 1

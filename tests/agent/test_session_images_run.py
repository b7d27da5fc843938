"""Every shipped session image starts its program on display :0 and serves selkies behind the
stream secret, in the confinement the Docker backend gives sessions (read-only root with a
tmpfs /tmp, every capability dropped, no new privileges, the home a volume owned by uid 1000).

The images are built (or found up to date) by ``scripts/build-images.sh``, which ``make
services`` runs; tests/portal/test_desktop_image_browser.py streams the desktop in a browser.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agent_runtime import images
from tests.support import ROOT
from tests.support.ci import unavailable
from tests.support.waits import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# The window class each image's program opens (xdotool search --class).
PROGRAMS = {"desktop": "xterm", "terminal": "xterm", "firefox": "firefox", "libreoffice": "libreoffice"}


@pytest.fixture(scope="module")
def built(docker_client: Any) -> None:
    build = subprocess.run([str(ROOT / "scripts/build-images.sh")], capture_output=True, text=True, timeout=5400)
    if build.returncode != 0:
        unavailable(f"building the session images failed (scripts/build-images.sh):\n{build.stdout}\n{build.stderr}")


@pytest.fixture
def run_image(docker_client: Any, built: None) -> Iterator:
    started: list[Any] = []
    volumes: list[Any] = []

    def run(name: str, env: dict[str, str]) -> Any:
        volume = docker_client.volumes.create(f"images-test-home-{secrets.token_hex(4)}")
        volumes.append(volume)
        container = docker_client.containers.run(
            images.shipped_image(name),
            name=f"images-test-{name}-{secrets.token_hex(3)}",
            detach=True,
            environment=env,
            ports={"8080/tcp": ("127.0.0.1", None)},
            read_only=True,
            tmpfs={"/tmp": "rw,nosuid,nodev,mode=1777", "/run": "rw,nosuid,nodev,mode=755"},
            volumes={volume.name: {"bind": images.HOME_PATH, "mode": "rw"}},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            shm_size="1024m",
            init=True,
        )
        started.append(container)
        return container

    yield run
    for container in started:
        container.remove(force=True)
    for volume in volumes:
        volume.remove(force=True)


def port_of(container: Any) -> int:
    container.reload()
    return int(container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])


def answers(port: int, **kwargs: Any) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=5, **kwargs).status_code
    except httpx.HTTPError:
        return None


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", images.NAMES)
def test_each_image_opens_its_program_and_streams_behind_the_secret(name, run_image):
    secret = secrets.token_urlsafe(16)
    container = run_image(name, {"STREAMSPACE_STREAM_SECRET": secret})
    port = port_of(container)
    began = time.monotonic()
    wait_until(lambda: answers(port) is not None, 120, what=f"selkies in {name}")
    assert answers(port) == 401
    assert answers(port, auth=("streamspace", secret)) == 200
    assert answers(port, auth=("streamspace", "not-the-secret")) == 401

    def window() -> bool:
        found = container.exec_run(["xdotool", "search", "--onlyvisible", "--class", PROGRAMS[name]], user="1000")
        return found.exit_code == 0 and found.output.strip() != b""

    wait_until(window, 180 - (time.monotonic() - began), what=f"{PROGRAMS[name]}'s window in {name}")
    probe = container.exec_run(["sh", "-c", "id -u; echo $HOME; touch ~/kept && echo home-writable"], user="1000")
    assert probe.output.decode().split() == ["1000", images.HOME_PATH, "home-writable"]
    log = container.logs().decode(errors="replace")
    assert "software encoding (x264)" in log and secret not in log

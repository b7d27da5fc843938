"""The proxy in front of a real session container (the ``streamspace-test-session``
image of ``tests/images/``: websocketd serving a static page and a line-echo WebSocket on :8080), direct to the
container's address and through an agent tunnel."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid

import httpx
import pytest
from asgiref.sync import sync_to_async
from websockets.asyncio.client import connect as ws_connect

from tests.proxy.conftest import bearer, make_session
from tests.support import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

IMAGE = "streamspace-test-session:latest"


@pytest.fixture(scope="module")
def container_endpoint():
    subprocess.run([str(ROOT / "tests" / "images" / "build.sh")], check=True, capture_output=True)
    name = f"streamspace-proxytest-{uuid.uuid4().hex[:10]}"
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, IMAGE], check=True, capture_output=True)
    try:
        address = subprocess.run(
            ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        endpoint = f"{address}:8080"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{endpoint}/", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            pytest.fail(f"the container at {endpoint} never answered")
        yield endpoint
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def credentials(session, user) -> dict[str, str]:
    """An API client's header: the portal's prefix takes no cookie."""
    return {"Authorization": bearer(user)}


async def exercise(daphne, session, user) -> None:
    base = f"{daphne.base}/api/v1/http/{session.pk}"
    async with httpx.AsyncClient(timeout=30, headers=credentials(session, user)) as client:
        page = await client.get(f"{base}/")
        assert page.status_code == 200
        assert b"streamspace test session" in page.content
    url = f"ws://127.0.0.1:{daphne.port}/api/v1/http/{session.pk}/"
    async with ws_connect(url, additional_headers=credentials(session, user)) as ws:
        for text in ("hello", "second line", "x" * 10_000):
            await ws.send(text)
            assert (await asyncio.wait_for(ws.recv(), 5)).rstrip("\n") == text


async def test_container_direct(daphne, container_endpoint, alice, template, docker_agent):
    docker_agent.proxy_mode = "direct"
    await sync_to_async(docker_agent.save)(update_fields=["proxy_mode"])
    session = await sync_to_async(make_session)(alice, template, docker_agent, endpoint=container_endpoint)
    await exercise(daphne, session, alice)


async def test_container_through_tunnel(daphne, container_endpoint, agent, alice, template, docker_agent):
    docker_agent.proxy_mode = "tunnel"
    await sync_to_async(docker_agent.save)(update_fields=["proxy_mode"])
    agent["backend"].endpoint = container_endpoint
    session = await sync_to_async(make_session)(alice, template, docker_agent, endpoint=container_endpoint)
    await exercise(daphne, session, alice)
    assert agent["opened"], "no tunnel was requested"

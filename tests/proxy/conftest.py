"""Fixtures for the session proxy: a real upstream process, sessions pointing at it, an
in-process ASGI caller and a real daphne process serving the control plane."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken

from agent_runtime.protocol import InventoryItem
from agent_runtime.tunnel import run_tunnel
from agents_app.dispatch import TUNNEL_MESSAGE_TYPE
from agents_app.models import AgentInstance
from sessions_app.models import Session, SessionState
from sessions_app.proxy import auth
from tests.support import ROOT
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import Daphne, start_daphne, stop

AGENT_TOKEN = "docker-1-token"  # tests/conftest.py's docker_agent


@pytest.fixture(scope="session")
def upstream_port() -> Iterator[int]:
    """A session-like HTTP + WebSocket server (tests/proxy/upstream_server.py)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.proxy.upstream_server", "--port", str(port)], cwd=ROOT)
    try:
        wait_for_port(port, process)
        yield port
    finally:
        stop(process)


def make_session(user, template, agent, *, endpoint: str, state: str = SessionState.RUNNING, **extra) -> Session:
    now = timezone.now()
    return Session.objects.create(
        name="proxy test",
        user=user,
        template=template,
        state=state,
        platform="docker",
        agent=agent,
        cpu_millicores=500,
        memory_mb=512,
        idle_timeout_s=600,
        streaming_ready=state == SessionState.RUNNING,
        streaming_port=8080,
        endpoint=endpoint,
        last_activity=now,
        state_changed_at=now,
        **extra,
    )


@pytest.fixture
def session(alice, template, docker_agent, upstream_port):
    return make_session(alice, template, docker_agent, endpoint=f"127.0.0.1:{upstream_port}")


def cookie_header(session, user) -> str:
    """The viewer cookie a browser holds on the session's own origin."""
    return f"{auth.VIEWER_COOKIE}={auth.make_viewer_cookie(session.pk, user.pk)}"


def session_host(session_or_id: Any, port: int | None = None) -> str:
    """``Host`` of a session's own origin (the default domain, ``localhost``; no DNS needed)."""
    session_id = getattr(session_or_id, "pk", session_or_id)
    return f"{session_id}.localhost" + (f":{port}" if port else "")


def bearer(user) -> str:
    """``Authorization`` of an API client: the only credential the portal's prefix takes."""
    return f"Bearer {AccessToken.for_user(user)}"


def ws_url(daphne, session, path="/ws") -> str:
    return f"ws://127.0.0.1:{daphne.port}/api/v1/http/{session.pk}{path}"


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except TimeoutError:
            pass
    return b"".join(chunks)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0


@pytest.fixture(scope="module")
def daphne(django_db_setup, django_db_blocker, upstream_port) -> Iterator[Daphne]:
    """One daphne process per test module (short upstream read timeout for the 504 test)."""
    with django_db_blocker.unblock():
        server = start_daphne({"STREAMSPACE_PROXY_READ_TIMEOUT_S": "2"})
    yield server
    stop(server.process)


class EndpointBackend:
    """The part of an agent backend the tunnel uses: ``status`` reports the endpoint."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    async def status(self, session_id: str) -> InventoryItem:
        return InventoryItem(session_id=session_id, state="running", streaming_ready=True, endpoint=self.endpoint)


async def connected_leader(agent: Any) -> str:
    """A connected leader instance of ``agent`` whose channel (returned) the test itself reads."""
    channel = await get_channel_layer().new_channel()
    await sync_to_async(AgentInstance.objects.create)(
        agent=agent,
        instance_id="leader-1",
        pod="test",
        channel_name=channel,
        is_leader=True,
        connected=True,
        connected_at=timezone.now(),
    )
    return channel


@pytest.fixture
async def agent(docker_agent, upstream_port):
    """A connected leader whose channel this test reads: every tunnel_open runs run_tunnel."""
    layer = get_channel_layer()
    channel = await connected_leader(docker_agent)
    state = {"opened": [], "backend": EndpointBackend(f"127.0.0.1:{upstream_port}")}
    tunnels: set[asyncio.Task] = set()

    async def listen():
        while True:
            message = await layer.receive(channel)
            if message["type"] == TUNNEL_MESSAGE_TYPE:
                state["opened"].append(message["payload"])
                task = asyncio.create_task(run_tunnel(message["payload"], token=AGENT_TOKEN, backend=state["backend"]))
                tunnels.add(task)

    listener = asyncio.create_task(listen())
    yield state
    listener.cancel()
    for task in tunnels:
        task.cancel()
    await asyncio.gather(listener, *tunnels, return_exceptions=True)
    await sync_to_async(close_old_connections_in_thread)()


@pytest.fixture(autouse=True)
async def _close_worker_thread_connections():
    """sync_to_async's worker thread keeps a connection; close it so the test DB can be dropped."""
    yield
    await sync_to_async(close_old_connections_in_thread)()


def close_old_connections_in_thread() -> None:
    """Close the connection of sync_to_async's worker thread (else the test DB cannot be dropped)."""
    from django.db import connections

    connections.close_all()


def assert_echoes_text_and_binary(ws) -> None:
    """A text frame and a 200 KB binary frame come back unchanged from the upstream's echo."""
    ws.send("hello")
    assert ws.recv(timeout=5) == "hello"
    blob = os.urandom(200_000)
    ws.send(blob)
    assert ws.recv(timeout=5) == blob

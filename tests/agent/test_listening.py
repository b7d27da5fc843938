"""A starting local session is reported ready as soon as its port opens, not at the readiness
back-off's next probe (agent_runtime/backends/listening.py, LocalBackend.until_answering),
and one session's start does not wait for another's first probe."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
import uuid

import pytest

from agent_runtime import commands
from agent_runtime.backends import local
from agent_runtime.backends.base import SessionSpec
from agent_runtime.backends.listening import ListenWatch, accepts
from agent_runtime.backends.local import LocalBackend
from agent_runtime.commands import CommandExecutor
from agent_runtime.protocol import Command, SessionStatus
from tests.support.waits import until

SAME_USER = {"session_user": os.environ["STREAMSPACE_LOCAL_SESSION_USER"]}  # tests/conftest.py
# Listens a moment after it starts, so the start's own probe finds nothing.
LATE_SERVER = ["sh", "-c", "sleep 0.3; exec " + sys.executable + " -m http.server --bind 127.0.0.1 {port}"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listen_on(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_accepts_tells_a_listening_port_from_a_closed_one():
    port = closed_port()
    assert not accepts(port)
    with listen_on(port):
        assert accepts(port)


async def test_waiters_are_released_when_their_port_opens_and_time_out_otherwise():
    watch = ListenWatch(interval=0.01)
    opening, never = closed_port(), closed_port()
    loop = asyncio.get_running_loop()
    servers: list[socket.socket] = []
    loop.call_later(0.2, lambda: servers.append(listen_on(opening)))
    started = time.monotonic()
    try:
        opened = await asyncio.gather(watch.wait(opening, 10), watch.wait(opening, 10))
        assert opened == [True, True]
        assert time.monotonic() - started < 5  # released by the port, not by the timeout
        assert await watch.wait(never, 0.1) is False
        await until(lambda: watch._task.done(), 5)  # nothing waits: the checking task ends
        assert watch._waiters == {}
        assert await watch.wait(opening, 10) is True  # open already: answered at once
    finally:
        for server in servers:
            server.close()


@pytest.fixture
async def agent(tmp_path):
    backend = LocalBackend(agent_id="local", data_dir=tmp_path, options=SAME_USER)
    frames: list = []

    async def send(payload) -> None:
        frames.append(payload)

    executor = CommandExecutor(backend, send, is_leader=lambda: True)
    backend.listen(executor)
    yield backend, executor, frames
    await executor.drain(5)
    for item in await LocalBackend(agent_id="local", data_dir=tmp_path, options=SAME_USER).inventory():
        await backend.stop(item.session_id, SessionSpec())


def start_command(session_id: str, argv: list[str]) -> Command:
    spec = {"command": argv, "user": "alice", "template": "t", "persistent_home": False}
    return Command(command_id=uuid.uuid4().hex, action="start_session", session_id=session_id, spec=spec)


async def test_a_session_is_reported_ready_when_its_port_opens_not_at_the_next_probe(agent, monkeypatch):
    backend, executor, frames = agent
    # A back-off this long would hold the ready status for a minute: only the port's opening
    # ends the wait before it.
    monkeypatch.setattr(commands, "READY_POLL_FIRST_S", 60.0)
    monkeypatch.setattr(commands, "READY_POLL_S", 60.0)
    await executor.submit(start_command("late", LATE_SERVER))
    ready = await until(
        lambda: [f for f in frames if isinstance(f, SessionStatus) and f.session_id == "late" and f.streaming_ready],
        15,
    )
    assert ready[0].state == "running"


async def test_a_start_does_not_wait_for_another_sessions_first_probe(agent, monkeypatch):
    backend, _, _ = agent
    held, release = asyncio.Event(), asyncio.Event()
    real = local.http_answers

    async def first_probe_held(host: str, port: int, **kwargs) -> bool:
        if not held.is_set():
            held.set()
            await release.wait()
        return await real(host, port, **kwargs)

    monkeypatch.setattr(local, "http_answers", first_probe_held)
    spec = SessionSpec.parse({"command": LATE_SERVER, "user": "alice", "template": "t", "persistent_home": False})
    first = asyncio.create_task(backend.start("first", spec))
    await asyncio.wait_for(held.wait(), 10)
    try:
        second = await asyncio.wait_for(backend.start("second", spec), 10)
        assert second.state == "running"
    finally:
        release.set()
    assert (await first).state == "running"

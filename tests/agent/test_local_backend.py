"""The local backend with the real demo app as the session process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.request

import pytest
from websockets.asyncio.client import connect

from agent_runtime.backends import homes
from agent_runtime.backends.base import BackendError, SessionSpec
from agent_runtime.backends.local import LocalBackend, process_start_time, substitute

DEMO = ["{python}", "-m", "agent_runtime.demo_app", "--port", "{port}", "--home", "{home}"]


def demo_spec(**overrides) -> SessionSpec:
    return SessionSpec.parse({"command": DEMO, "user": "alice", "template": "demo-canvas", **overrides})


SAME_USER = {"session_user": os.environ["STREAMSPACE_LOCAL_SESSION_USER"]}  # tests/conftest.py


@pytest.fixture
async def backend(tmp_path):
    backend = LocalBackend(agent_id="local", data_dir=tmp_path, options=SAME_USER)
    yield backend
    fresh = LocalBackend(agent_id="local", data_dir=tmp_path, options=SAME_USER)  # also catches "restarted" ones
    for item in await fresh.inventory():
        await fresh.stop(item.session_id, SessionSpec())
    log_dir = tmp_path / "local-backend" / "logs"
    if log_dir.exists():
        for log in log_dir.iterdir():
            sys.stderr.write(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}\n")


async def until_ready(backend, session_id: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = await backend.status(session_id)
        if item.streaming_ready:
            return item
        await asyncio.sleep(0.05)
    raise AssertionError(f"{session_id} never became ready: {item}")


def pid_of(backend, session_id: str) -> int:
    return json.loads(backend.state_path.read_text())[session_id]["pid"]


def http_get(endpoint: str, path: str = "/") -> bytes:
    with urllib.request.urlopen(f"http://{endpoint}{path}", timeout=5) as response:
        return response.read()


def test_substitution():
    argv = substitute(["{python}", "--port={port}", "{home}/x"], port=8123, home=__import__("pathlib").Path("/h"))
    assert argv == [sys.executable, "--port=8123", "/h/x"]


async def test_lifecycle_with_the_demo_app(backend, tmp_path):
    first = await backend.start("s1", demo_spec())
    assert first.state == "running" and first.endpoint == f"127.0.0.1:{first.streaming_port}"
    ready = await until_ready(backend, "s1")
    assert b"Demo canvas" in http_get(ready.endpoint)
    pid = pid_of(backend, "s1")
    assert os.getpgid(pid) == pid  # its own process group
    home = tmp_path / "homes" / homes.home_key("alice")
    async with connect(f"ws://{ready.endpoint}/ws") as ws:
        await ws.send(json.dumps({"stroke": {"x0": 0, "y0": 0, "x1": 1, "y1": 1, "color": "#f00"}}))
        await ws.recv()
        await ws.send(b"\x01\x02")
        assert await ws.recv() == b"\x01\x02"
    (home / "notes.txt").write_text("kept")

    assert (await backend.start("s1", demo_spec())).state == "running"  # repeated: no-op
    assert pid_of(backend, "s1") == pid

    hibernated = await backend.hibernate("s1")
    assert hibernated.state == "hibernated" and process_start_time(pid) is None
    assert (await backend.hibernate("s1")).state == "hibernated"  # repeated: no-op

    woken = await backend.wake("s1", demo_spec())
    assert woken.state == "running"
    new_pid = pid_of(backend, "s1")
    assert new_pid != pid
    ready = await until_ready(backend, "s1")
    assert (await backend.wake("s1", demo_spec())).state == "running" and pid_of(backend, "s1") == new_pid
    assert (home / "notes.txt").read_text() == "kept"
    assert json.loads(http_get(ready.endpoint, "/strokes"))[0]["color"] == "#f00"  # the app read its home

    assert (await backend.stop("s1", SessionSpec())).state == "stopped"
    assert process_start_time(new_pid) is None
    assert (await backend.stop("s1", SessionSpec())).state == "stopped"  # repeated: no-op
    assert (await backend.status("s1")).state == "stopped"
    assert (home / "notes.txt").exists()  # the home outlives the session


async def test_agent_restart_keeps_sessions_running(backend, tmp_path):
    await backend.start("s1", demo_spec())
    await until_ready(backend, "s1")
    pid = pid_of(backend, "s1")
    restarted = LocalBackend(agent_id="local", data_dir=tmp_path, options=SAME_USER)  # a new agent, same data dir
    inventory = await restarted.inventory()
    assert [(i.session_id, i.state, i.streaming_ready) for i in inventory] == [("s1", "running", True)]
    assert (await restarted.start("s1", demo_spec())).state == "running"
    assert pid_of(restarted, "s1") == pid  # nothing recreated
    assert (await restarted.stop("s1", SessionSpec())).state == "stopped"
    assert process_start_time(pid) is None


async def test_ephemeral_home_is_removed_on_stop(backend, tmp_path):
    await backend.start("s2", demo_spec(persistent_home=False))
    session_home = tmp_path / "local-backend" / "sessions" / "s2" / "home"
    assert session_home.is_dir()
    await backend.stop("s2", SessionSpec())
    assert not session_home.exists()


async def test_delete_home(backend, tmp_path):
    await backend.start("s3", demo_spec(user="bob"))
    home = tmp_path / "homes" / homes.home_key("bob")
    assert home.is_dir()
    await backend.stop("s3", SessionSpec(delete_home=True))
    assert not home.exists()


async def test_errors_are_clear(backend):
    with pytest.raises(BackendError, match="'command'"):
        await backend.start("s4", SessionSpec.parse({"image": "x", "user": "alice"}))
    with pytest.raises(BackendError, match="does not exist"):
        await backend.hibernate("nope")
    with pytest.raises(BackendError, match="cannot start"):
        await backend.start("s5", demo_spec(command=["/no/such/program"]))


async def test_a_crashed_session_reports_failed(backend):
    await backend.start("s6", demo_spec(command=["{python}", "-c", "raise SystemExit(3)"]))
    deadline = time.monotonic() + 10
    while (item := await backend.status("s6")).state != "failed" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert item.state == "failed"


async def test_stubborn_process_is_killed(backend, monkeypatch):
    monkeypatch.setattr("agent_runtime.backends.local.TERMINATE_GRACE_S", 0.5)
    ignore = (
        "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    )
    await backend.start("s7", demo_spec(command=["{python}", "-c", ignore]))
    pid = pid_of(backend, "s7")
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await backend.hibernate("s7")
    assert process_start_time(pid) is None and time.monotonic() - started < 3


async def test_a_process_spawned_after_the_mandate_ended_is_ended_and_not_recorded(backend):
    """A leader deposed while its start spawned the session's process ends that process (by
    its pid, which only this call knows) and answers not_leader (issue 17)."""
    from agent_runtime.backends.base import MandateLost

    class Deposed:  # the agent: leads at the check before the spawn, not at the one after it
        answers = iter([True, False])

        async def step(self, *args) -> None:
            return None

        def exited(self, *args) -> None:
            return None

        def leading(self) -> bool:
            return next(self.answers)

    spawned = []
    spawn = backend._spawn

    async def recording_spawn(*args):
        spawned.append(record := await spawn(*args))
        return record

    backend._spawn = recording_spawn
    backend.listen(Deposed())
    with pytest.raises(MandateLost, match="^not_leader"):
        await backend.start("s9", demo_spec())
    [record] = spawned
    assert not backend._alive(record), "the spawned process outlived the fenced start"
    assert await backend.inventory() == []


class OfferedPorts:
    """A stand-in for ``socket.socket`` whose ``bind`` to port 0 gets ``ports`` in turn."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = iter(ports)

    def __call__(self, *args):
        offered = self

        class Sock:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def bind(self, address):
                self.port = address[1] or next(offered.ports)

            def getsockname(self):
                return ("127.0.0.1", self.port)

        return Sock()


def test_a_port_another_session_holds_is_never_handed_out_again(monkeypatch):
    """The kernel may offer the port of a session that has not bound it yet: it is skipped."""
    from agent_runtime.backends import local

    monkeypatch.setattr(local.socket, "socket", OfferedPorts([41000, 41001]))
    assert local.free_port(taken={41000}) == 41001
    monkeypatch.setattr(local.socket, "socket", OfferedPorts([41000, 41002]))
    assert local.free_port(41000, taken={41000}) == 41002  # preferred, but another session's now


async def test_a_start_passes_the_other_sessions_ports_as_taken(backend, monkeypatch):
    from agent_runtime.backends import local

    first = await backend.start("s1", demo_spec())
    seen = []
    real = local.free_port

    def recording(preferred=None, *, taken=()):
        seen.append(set(taken))
        return real(preferred, taken=taken)

    monkeypatch.setattr(local, "free_port", recording)
    second = await backend.start("s2", demo_spec())
    assert seen == [{first.streaming_port}] and second.streaming_port != first.streaming_port

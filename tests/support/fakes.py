"""Test doubles for the agent: a fake control plane (a real ``websockets`` server) and
fake backends per failure mode (JupyterHub ``tests/mocking.py`` style)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from agent_runtime.backends.base import Backend, BackendError, SessionSpec
from agent_runtime.protocol import AGENT_MESSAGES, InventoryItem, decode


@dataclass
class AgentLink:
    """One agent connection as the fake control plane sees it."""

    ws: ServerConnection
    headers: dict[str, str]
    frames: list[Any] = field(default_factory=list)  # decoded Frame objects, in order
    register: Any = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, type_: str, payload: dict[str, Any]) -> None:
        await self.ws.send(json.dumps({"type": type_, "id": uuid.uuid4().hex, "ts": time.time(), "payload": payload}))

    async def command(
        self, action: str, session_id: str, spec: dict | None = None, command_id: str | None = None
    ) -> str:
        command_id = command_id or uuid.uuid4().hex
        payload = {
            "command_id": command_id,
            "action": action,
            "session_id": session_id,
            "spec": spec or {},
            "attempt": 1,
        }
        await self.send("command", payload)
        return command_id

    def of_type(self, type_: str) -> list[Any]:
        return [f for f in self.frames if f.type == type_]


def leading(link: AgentLink) -> bool:
    """The instance's latest word on leadership (register, leader frames, heartbeats)."""
    state = link.register.is_leader if link.register else False
    for frame in link.frames:
        if frame.type in ("leader", "heartbeat"):
            state = frame.payload.is_leader
    return state


def link_of(cp: FakeControlPlane, instance_id: str) -> AgentLink | None:
    """The newest connection of the agent instance ``instance_id``, if it registered."""
    links = [link for link in cp.links if link.register.instance_id == instance_id]
    return links[-1] if links else None


class FakeControlPlane:
    """Accepts agents on ``/api/v1/agents/connect``, answers ``registered``, records frames."""

    def __init__(self, heartbeat_interval_s: float = 0.2, token: str = "test-token"):
        self.heartbeat_interval_s = heartbeat_interval_s
        self.token = token
        self.links: list[AgentLink] = []
        self.connect_times: list[float] = []
        self.rejected = 0
        self.refuse_next = 0  # answer this many handshakes with 503 (reconnect tests)
        self.attempt_times: list[float] = []
        self._changed = asyncio.Condition()
        self._server = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeControlPlane:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def start(self, port: int = 0) -> None:
        self._server = await serve(self._handler, "127.0.0.1", port, process_request=self._check)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _check(self, connection: ServerConnection, request: Any):
        self.attempt_times.append(time.monotonic())
        if self.refuse_next > 0:
            self.refuse_next -= 1
            return connection.respond(503, "try later")
        if request.path != "/api/v1/agents/connect":
            return connection.respond(404, "not found")
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            self.rejected += 1
            return connection.respond(401, "bad token")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        self.connect_times.append(time.monotonic())
        link = AgentLink(ws=ws, headers=dict(ws.request.headers))
        try:
            async for raw in ws:
                frame = decode(raw, AGENT_MESSAGES)
                if frame.type == "register":
                    link.register = frame.payload
                    self.links.append(link)
                    await link.send(
                        "registered",
                        {"heartbeat_interval_s": self.heartbeat_interval_s, "instance_id": frame.payload.instance_id},
                    )
                link.frames.append(frame)
                async with self._changed:
                    self._changed.notify_all()
        except Exception:
            pass
        finally:
            link.closed.set()
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, predicate, timeout: float = 10.0) -> Any:
        """Wait until ``predicate()`` returns something truthy (re-checked on every frame)."""

        async def _wait():
            async with self._changed:
                while True:
                    value = predicate()
                    if value:
                        return value
                    await self._changed.wait()

        return await asyncio.wait_for(_wait(), timeout)

    async def link(self, index: int = -1, timeout: float = 10.0) -> AgentLink:
        await self.wait_for(lambda: len(self.links) > (index if index >= 0 else 0), timeout)
        return self.links[index]

    def frames(self, type_: str | None = None) -> list[Any]:
        return [f for link in self.links for f in link.frames if type_ is None or f.type == type_]

    def result_for(self, command_id: str):
        for f in self.frames("result"):
            if f.payload.command_id == command_id:
                return f.payload
        return None

    async def wait_result(self, command_id: str, timeout: float = 10.0):
        return await self.wait_for(lambda: self.result_for(command_id), timeout)


class RecordingBackend(Backend):
    """In-memory backend: records calls; ``delay`` per action makes ordering observable."""

    platform = "docker"

    def __init__(self, *, delay: float = 0.0, fail_start: str | None = None, **kwargs: Any):
        kwargs.setdefault("agent_id", "test")
        kwargs.setdefault("data_dir", "/tmp")
        super().__init__(**kwargs)
        self.delay = delay
        self.fail_start = fail_start
        self.sessions: dict[str, str] = {}
        self.calls: list[tuple[str, str, float, float]] = []  # (action, session, started, ended)

    async def _act(self, action: str, session_id: str, new_state: str | None) -> InventoryItem:
        started = time.monotonic()
        await asyncio.sleep(self.delay)
        if new_state is None:
            self.sessions.pop(session_id, None)
        else:
            self.sessions[session_id] = new_state
        self.calls.append((action, session_id, started, time.monotonic()))
        return await self.status(session_id)

    async def start(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        if self.fail_start:
            raise BackendError(self.fail_start)
        from agent_runtime.backends.docker_objects import validate_image

        validate_image(spec.image)
        return await self._act("start", session_id, "running")

    async def stop(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        return await self._act("stop", session_id, None)

    async def hibernate(self, session_id: str) -> InventoryItem:
        if session_id not in self.sessions:
            raise BackendError(f"session {session_id} does not exist")
        return await self._act("hibernate", session_id, "hibernated")

    async def wake(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        return await self._act("wake", session_id, "running")

    async def status(self, session_id: str) -> InventoryItem:
        state = self.sessions.get(session_id, "stopped")
        running = state == "running"
        return InventoryItem(
            session_id=session_id,
            state=state,
            streaming_ready=running,
            streaming_port=8080 if running else None,
            endpoint="127.0.0.1:9" if running else None,
        )

    async def inventory(self) -> list[InventoryItem]:
        return [await self.status(sid) for sid in sorted(self.sessions)]


class SlowReadyBackend(RecordingBackend):
    """Starts report ``streaming_ready`` only after ``ready_after`` seconds."""

    def __init__(self, ready_after: float = 0.5, **kwargs: Any):
        super().__init__(**kwargs)
        self.ready_after = ready_after
        self.started_at: dict[str, float] = {}

    async def start(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        self.started_at[session_id] = time.monotonic()
        return await super().start(session_id, spec)

    async def status(self, session_id: str) -> InventoryItem:
        item = await super().status(session_id)
        if item.state == "running" and time.monotonic() - self.started_at.get(session_id, 0) < self.ready_after:
            item.streaming_ready = False
        return item


class CrashingBackend(RecordingBackend):
    """A backend with a bug: start raises a non-BackendError exception."""

    async def start(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        raise RuntimeError("backend bug")


class ManualElector:
    """An elector the test flips by hand."""

    def __init__(self, leader: bool = True):
        self._leader = leader
        self._listeners: list[Any] = []
        self.stopped = False

    def subscribe(self, listener: Any) -> None:
        self._listeners.append(listener)

    @property
    def is_leader(self) -> bool:
        return self._leader

    def set_leader(self, value: bool) -> None:
        self._leader = value
        for listener in self._listeners:
            listener(value)

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self.stopped = True
        self.set_leader(False)


class SteppingBackend(SlowReadyBackend):
    """Reports a launch's steps as the Docker backend does: the image is pulled (taking
    ``pull_s``), the container is created and started; then it answers after ``ready_after``."""

    def __init__(self, pull_s: float = 0.3, **kwargs: Any):
        super().__init__(**kwargs)
        self.pull_s = pull_s

    async def start(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        await self.report_step(session_id, "image", f"Pulling image {spec.image}")
        await asyncio.sleep(self.pull_s)
        await self.report_step(session_id, "image", f"Pulled image {spec.image}", "done")
        await self.report_step(session_id, "workload", "Creating the container")
        item = await super().start(session_id, spec)
        await self.report_step(session_id, "workload", "Container started", "done")
        return item

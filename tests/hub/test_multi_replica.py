"""Two daphne replicas sharing PostgreSQL and Redis, and a scripted agent built on
``agent_runtime``'s connection code (docs/architecture.md §7.3: cross-replica routing, reconnect,
durable commands)."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import httpx
import pytest
from channels.db import database_sync_to_async

from agent_runtime.backends.base import Backend, SessionSpec
from agent_runtime.config import AgentConfig
from agent_runtime.connection import AgentConnection
from agent_runtime.leader import AlwaysLeader
from agent_runtime.protocol import InventoryItem
from agents_app.models import Agent, AgentCommand
from agents_app.tokens import hash_token
from sessions_app.models import Session
from tests.support.factories import make_user
from tests.support.ports import free_port
from tests.support.processes import start_replica
from tests.support.waits import until

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


class RecordingBackend(Backend):
    """Runs nothing; records every call so the test can count deliveries."""

    platform = "docker"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls: list[tuple[str, str]] = []
        self.sessions: dict[str, str] = {}

    def _item(self, session_id: str) -> InventoryItem:
        state = self.sessions.get(session_id, "stopped")
        ready = state == "running"
        return InventoryItem(
            session_id=session_id,
            state=state,
            streaming_ready=ready,
            streaming_port=8080 if ready else None,
            endpoint="127.0.0.1:9" if ready else None,
        )

    async def start(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        self.calls.append(("start", session_id))
        self.sessions[session_id] = "running"
        return self._item(session_id)

    async def stop(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        self.calls.append(("stop", session_id))
        self.sessions.pop(session_id, None)
        return self._item(session_id)

    async def hibernate(self, session_id: str) -> InventoryItem:
        self.calls.append(("hibernate", session_id))
        self.sessions[session_id] = "hibernated"
        return self._item(session_id)

    async def wake(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        self.calls.append(("wake", session_id))
        self.sessions[session_id] = "running"
        return self._item(session_id)

    async def status(self, session_id: str) -> InventoryItem:
        return self._item(session_id)

    async def inventory(self) -> list[InventoryItem]:
        return [self._item(sid) for sid in self.sessions]


async def http_ready(base: str) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(base + "/healthz", timeout=1)).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def replicas():
    procs = {}
    ports = {"a": free_port(), "b": free_port()}
    for name, port in ports.items():
        procs[name] = start_replica(
            f"replica-{name}",
            port,
            AGENT_HEARTBEAT_INTERVAL_S="30",  # agents stay silent between commands (idle socket test)
        )
    yield {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}, procs
    for proc in procs.values():
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)


async def test_cross_replica_dispatch_and_failover(replicas, template, tmp_path):
    bases, procs = replicas
    for base in bases.values():
        await until(lambda base=base: http_ready(base))
    from rest_framework_simplejwt.tokens import RefreshToken

    user = await database_sync_to_async(make_user)("carol")
    token = await database_sync_to_async(lambda: str(RefreshToken.for_user(user).access_token))()
    await database_sync_to_async(Agent.objects.create)(
        agent_id="docker-ha", platform="docker", token_hash=hash_token("ha-token")
    )
    config = AgentConfig(
        control_plane=f"{bases['a']},{bases['b']}",
        token="ha-token",
        agent_id="docker-ha",
        platform="docker",
        instance_id="agent-1",
        data_dir=tmp_path,
        backoff_initial=2.0,
        backoff_max=4.0,
    )
    backend = RecordingBackend(agent_id="docker-ha", data_dir=tmp_path)
    agent = AgentConnection(config, backend, AlwaysLeader())
    agent_task = asyncio.ensure_future(agent.run())
    api = {
        name: httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        for name, base in bases.items()
    }
    try:
        await asyncio.wait_for(agent.connected.wait(), 20)

        async def instance_pod():
            rows = await database_sync_to_async(
                lambda: list(
                    Agent.objects.get(agent_id="docker-ha")
                    .instances.filter(connected=True)
                    .values_list("pod", flat=True)
                )
            )()
            return rows[0] if rows else None

        assert await until(instance_pod) == "replica-a"

        # 1. Launch through replica B; the agent (on A) gets the command and the session runs.
        created = await api["b"].post("/api/v1/sessions", json={"template": template.slug})
        assert created.status_code == 202, created.text
        session_id = created.json()["id"]

        async def state_on(name):
            return (await api[name].get(f"/api/v1/sessions/{session_id}")).json()

        running = await until(lambda: _state_is(state_on("b"), "running"))
        assert running["streaming_ready"] is True and running["streaming_port"] == 8080
        assert (await state_on("a"))["state"] == "running"
        assert backend.calls == [("start", session_id)]

        # 2. Kill replica A. While the agent is away, stop the session through B.
        procs["a"].send_signal(signal.SIGKILL)
        procs["a"].wait(timeout=10)
        await until(lambda: _not(agent.connected.is_set()), timeout=30)
        stopped = await api["b"].delete(f"/api/v1/sessions/{session_id}")
        assert stopped.status_code == 202 and stopped.json()["state"] == "stopping"
        assert ("stop", session_id) not in backend.calls

        # 3. The agent reconnects to B and receives the stop exactly once.
        await until(lambda: _state_is(state_on("b"), "stopped"), timeout=40)
        assert await until(instance_pod) == "replica-b"
        assert backend.calls.count(("stop", session_id)) == 1
        command = await database_sync_to_async(
            lambda: AgentCommand.objects.get(session_id=session_id, action="stop_session")
        )()
        assert command.state == "succeeded"

        # 4. An idle agent socket over the Redis channel layer survives > 10 s (channels_redis #422),
        #    and the next command still reaches it.
        await asyncio.sleep(12)
        again = await api["b"].post("/api/v1/sessions", json={"template": template.slug})
        second = again.json()["id"]
        await until(lambda: _state_is(_get(api["b"], second), "running"))
        assert backend.calls.count(("stop", session_id)) == 1  # still exactly once
        stats = await database_sync_to_async(lambda: Session.objects.get(pk=second).agent.agent_id)()
        assert stats == "docker-ha"
    finally:
        await agent.shutdown(2)
        agent_task.cancel()
        with contextlib.suppress(BaseException):
            await agent_task
        for client in api.values():
            await client.aclose()


async def _get(client: httpx.AsyncClient, session_id: str) -> dict:
    return (await client.get(f"/api/v1/sessions/{session_id}")).json()


async def _state_is(coro, state: str):
    body = await coro
    return body if body.get("state") == state else None


async def _not(value: bool) -> bool:
    return not value


async def test_oversized_frame_through_daphne_closes_only_that_socket(replicas):
    """Daphne's own WebSocket message limit is 1 MiB, the protocol's limit: a bigger frame
    closes that socket (the hub never sees it); another agent's socket is unaffected."""
    import json

    import websockets

    bases, _ = replicas
    await until(lambda: http_ready(bases["a"]))
    for name in ("big", "calm"):
        await database_sync_to_async(Agent.objects.create)(
            agent_id=name, platform="docker", token_hash=hash_token(f"{name}-token")
        )
    url = bases["a"].replace("http", "ws") + "/api/v1/agents/connect"

    def register(name: str) -> str:
        return json.dumps(
            {
                "type": "register",
                "id": "1",
                "ts": 0,
                "payload": {
                    "agent_id": name,
                    "instance_id": "i",
                    "platform": "docker",
                    "version": "t",
                    "hostname": "h",
                    "is_leader": False,
                },
            }
        )

    async with (
        websockets.connect(url, additional_headers={"Authorization": "Bearer big-token"}, max_size=None) as big,
        websockets.connect(url, additional_headers={"Authorization": "Bearer calm-token"}) as calm,
    ):
        for ws, name in ((big, "big"), (calm, "calm")):
            await ws.send(register(name))
            assert json.loads(await ws.recv())["type"] == "registered"
        await big.send("x" * (2 * 1024 * 1024))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(big.recv(), 10)
        await calm.send(
            json.dumps(
                {"type": "session_status", "id": "2", "ts": 0, "payload": {"session_id": "nope", "state": "running"}}
            )
        )
        reply = json.loads(await asyncio.wait_for(calm.recv(), 10))
        assert reply["type"] == "error" and reply["payload"]["code"] == "unknown_session"

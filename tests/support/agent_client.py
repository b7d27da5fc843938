"""A scripted agent for the hub: speaks the agent protocol over Channels'
``WebsocketCommunicator`` to the control plane's ASGI application, in the test's process.

(``tests/support/fakes.py`` holds the other side: a fake control plane for the real agent.)"""

from __future__ import annotations

import json
import uuid

from channels.testing import WebsocketCommunicator

from agents_app.models import Agent
from streamspace.asgi import application


def frame(type_: str, **payload) -> str:
    """One agent-protocol frame as the text of a WebSocket message."""
    return json.dumps({"type": type_, "id": uuid.uuid4().hex, "ts": 0, "payload": payload})


def register_payload(agent: Agent, instance_id: str, *, is_leader: bool = True, sessions=None) -> dict:
    return {
        "agent_id": agent.agent_id,
        "instance_id": instance_id,
        "platform": agent.platform,
        "version": "test",
        "hostname": "test-host",
        "is_leader": is_leader,
        "capacity": {"cpu_millicores": 8000, "memory_mb": 16384, "sessions": 10},
        "sessions": sessions or [],
    }


class AgentClient:
    """A scripted agent over a WebsocketCommunicator."""

    def __init__(self, agent: Agent, token: str, instance_id: str):
        self.agent, self.token, self.instance_id = agent, token, instance_id
        self.comm = WebsocketCommunicator(
            application, "/api/v1/agents/connect", headers=[(b"authorization", f"Bearer {token}".encode())]
        )

    async def connect(self) -> bool:
        connected, _ = await self.comm.connect(timeout=5)
        if not connected:
            # The consumer refused, but runs until it hears the disconnect (its channel-layer
            # receive with it): end it inside this test's event loop.
            await self.comm.disconnect()
        return connected

    async def send(self, type_: str, **payload) -> None:
        await self.comm.send_to(text_data=frame(type_, **payload))

    async def send_raw(self, text: str) -> None:
        await self.comm.send_to(text_data=text)

    async def recv(self, timeout: float = 5) -> dict:
        return json.loads(await self.comm.receive_from(timeout=timeout))

    async def recv_type(self, type_: str, timeout: float = 5) -> dict:
        message = await self.recv(timeout)
        assert message["type"] == type_, message
        return message["payload"]

    async def register(self, *, is_leader: bool = True, sessions=None) -> dict:
        assert await self.connect()
        await self.send(
            "register", **register_payload(self.agent, self.instance_id, is_leader=is_leader, sessions=sessions)
        )
        return await self.recv_type("registered")

    async def nothing(self, timeout: float = 0.3) -> bool:
        return await self.comm.receive_nothing(timeout=timeout)

    async def close(self) -> None:
        await self.comm.disconnect()

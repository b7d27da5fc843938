"""Hub admission on a real replica (``STREAMSPACE_HUB_ADMISSION``, docs/architecture.md §13.2):
with the limit at 2, a third agent's handshake is answered only once an earlier agent is
registered; a handshake that never registers gives its slot up at the deadline; HTTP
requests are served all along. Real daphne under the launcher, real WebSocket clients,
PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import pytest
import websockets
from channels.db import database_sync_to_async

from agent_runtime.protocol import CONNECT_PATH
from agents_app.models import Agent
from agents_app.tokens import hash_token
from tests.support.agent_client import frame, register_payload
from tests.support.processes import running_replica
from tests.support.waits import until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

AGENTS = 5


@pytest.fixture
def replica():
    with running_replica("admission-replica", STREAMSPACE_HUB_ADMISSION="2") as port:
        yield f"127.0.0.1:{port}"


def _make_agents() -> None:
    Agent.objects.bulk_create(
        Agent(agent_id=f"adm-{i}", platform="docker", token_hash=hash_token(f"adm-token-{i}")) for i in range(AGENTS)
    )


def _connect(address: str, i: int):
    return websockets.connect(
        f"ws://{address}{CONNECT_PATH}",
        additional_headers={"Authorization": f"Bearer adm-token-{i}"},
        open_timeout=60,
        ping_interval=None,
    )


async def _register(ws, i: int) -> dict:
    await ws.send(frame("register", **register_payload(Agent(agent_id=f"adm-{i}", platform="docker"), f"adm-{i}-0")))
    return json.loads(await ws.recv())


async def _gauge(client: httpx.AsyncClient, name: str) -> float:
    """A gauge of the replica's ``/metrics`` (itself an HTTP request served meanwhile)."""
    text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


async def test_a_third_handshake_waits_for_a_registration_and_a_stalled_one_for_the_deadline(replica):
    await database_sync_to_async(_make_agents)()
    async with contextlib.AsyncExitStack() as stack, httpx.AsyncClient(base_url=f"http://{replica}") as http:
        first = await stack.enter_async_context(_connect(replica, 0))
        stalled = await stack.enter_async_context(_connect(replica, 1))  # never sends register
        third = asyncio.ensure_future(stack.enter_async_context(_connect(replica, 2)))
        stack.callback(third.cancel)
        await until(lambda: _gauge(http, "streamspace_hub_handshakes_waiting"), what="the third handshake waiting")
        # Two slots are taken: the third is not answered, and HTTP is served meanwhile.
        assert not third.done()
        assert (await http.get("/healthz")).status_code == 200
        assert await _gauge(http, "streamspace_hub_handshakes_in_flight") == 2

        assert (await _register(first, 0))["type"] == "registered"
        ws3 = await asyncio.wait_for(third, 30)  # the first one's slot went to it
        assert (await _register(ws3, 2))["type"] == "registered"
        # Registered sockets hold no slot: only the stalled one may (until its deadline).
        assert await _gauge(http, "streamspace_hub_handshakes_in_flight") <= 1

        # In flight: the stalled one, and now a fourth (a free slot: no wait). A fifth waits,
        # and goes on when the stalled one's slot is given up (the hub closes it for not
        # registering, or the hold deadline) or when it has waited its longest, not for the
        # fourth, which registers only once the fifth is through.
        ws4 = await stack.enter_async_context(_connect(replica, 3))
        fifth = asyncio.ensure_future(stack.enter_async_context(_connect(replica, 4)))
        stack.callback(fifth.cancel)
        await until(lambda: _gauge(http, "streamspace_hub_handshakes_waiting"), what="the fifth handshake waiting")
        ws5 = await asyncio.wait_for(fifth, 40)
        reply = json.loads(await asyncio.wait_for(stalled.recv(), 30))
        assert reply["payload"]["code"] == "register_timeout"
        assert (await _register(ws4, 3))["type"] == "registered"
        assert (await _register(ws5, 4))["type"] == "registered"
        # Every slot is given back, the stalled one's included.
        assert await until(lambda: _in_flight_is(http, 0), what="no slot held")
        assert await _gauge(http, "streamspace_hub_handshakes_waiting") == 0


async def _in_flight_is(http: httpx.AsyncClient, value: float) -> bool:
    return await _gauge(http, "streamspace_hub_handshakes_in_flight") == value

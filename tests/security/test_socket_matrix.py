"""The authorization matrix over sockets and the session proxy: the portal socket, the proxy
(HTTP and WebSocket), the agent socket and the tunnel endpoint × every principal.

Each cell drives the whole ASGI application (``streamspace.asgi``: the same routing daphne
serves) in-process, from this thread through ``async_to_sync`` (``conftest.py`` says why).
The sessions answer from a real upstream process. Expectations and the pending cells are in
``tests/security/socket_cells.py`` and ``tests/security/expect.py``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import ApplicationCommunicator, WebsocketCommunicator
from django.utils import timezone

from agent_runtime import protocol
from agents_app import tunnels
from agents_app.models import AgentCommand, AgentInstance
from sessions_app.models import Session, SessionState
from sessions_app.proxy import auth as proxy_auth
from sessions_app.proxy import upstream
from sessions_app.viewer import make_viewer_token
from streamspace.asgi import application
from tests.security.expect import ACCEPT, REFUSE, Expectation, cell_id, marks_for
from tests.security.socket_cells import PROXY_CELLS, SOCKET_ROWS, ProxyCell, SocketRow
from tests.security.world import OTHER_AGENT, PEOPLE, PRINCIPALS, SESSION_AGENT_TOKEN, World

pytestmark = pytest.mark.django_db

HOST = b"testserver"
SAME_ORIGIN = b"http://testserver"
TIMEOUT_S = 10


def run(coroutine_function: Any, *args: Any) -> Any:
    """Run a coroutine function from this thread, so its database calls use this connection."""
    return async_to_sync(coroutine_function)(*args)


# --- the session proxy ----------------------------------------------------------------------
BROWSER = [(b"sec-fetch-site", b"same-origin"), (b"user-agent", b"Mozilla/5.0 (matrix)")]


def proxy_credential(cell: ProxyCell, world: World, session: Session) -> tuple[str, list[tuple[bytes, bytes]]]:
    """``(query string, headers)`` with which ``cell.principal`` presents ``cell.credential``."""
    credential = world.credentials[cell.principal]
    user = credential.user
    if cell.credential == "viewer-link":
        return f"token={make_viewer_token(session.pk, user.pk)}", []
    if cell.credential == "viewer-cookie":
        cookie = f"{proxy_auth.VIEWER_COOKIE}={proxy_auth.make_viewer_cookie(session.pk, user.pk)}"
        return "", [(b"cookie", cookie.encode()), *BROWSER]
    if cell.credential == "portal-cookie":
        return "", [(b"cookie", f"sessionid={credential.portal_cookie}".encode()), (b"accept", b"text/html"), *BROWSER]
    if credential.authorization:  # bearer-jwt, token-header, agent-bearer
        return "", [(b"authorization", credential.authorization.encode())]
    return "", []


async def http_request(method: str, path: str, query: str, headers: list, body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP request through the application, the way daphne hands it over."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", HOST), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
    start = await communicator.receive_output(TIMEOUT_S)
    assert start["type"] == "http.response.start", start
    content = b""
    while True:
        message = await communicator.receive_output(TIMEOUT_S)
        content += message.get("body", b"")
        if not message.get("more_body", False):
            break
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(TIMEOUT_S)
    return start["status"], content


async def proxy_http(cell: ProxyCell, world: World, session: Session) -> tuple[int, bytes]:
    query, headers = proxy_credential(cell, world, session)
    path = f"/api/v1/http/{session.pk}/" + ("small" if cell.kind == "GET" else "echo")
    try:
        return await http_request(cell.kind, path, query, headers, b"posted" if cell.kind == "POST" else b"")
    finally:
        await upstream.close_clients()


async def proxy_websocket(cell: ProxyCell, world: World, session: Session) -> str:
    query, headers = proxy_credential(cell, world, session)
    if cell.credential in ("viewer-cookie", "portal-cookie"):
        headers.append((b"origin", SAME_ORIGIN))  # browsers send Origin on WebSockets
    path = f"/api/v1/http/{session.pk}/ws" + (f"?{query}" if query else "")
    ws = WebsocketCommunicator(application, path, headers=[(b"host", HOST), *headers])
    try:
        connected, _ = await ws.connect(timeout=TIMEOUT_S)
        if not connected:
            return REFUSE
        if cell.target == "running":  # the session itself answers: its echo
            await ws.send_to(text_data="hello")
            assert await ws.receive_from(timeout=TIMEOUT_S) == "hello"
        await ws.disconnect()
        return ACCEPT
    finally:
        await upstream.close_clients()


def proxy_param(cell: ProxyCell) -> Any:
    return pytest.param(cell, id=cell_id(cell.row, cell.principal), marks=marks_for("proxy", cell.row, cell.principal))


@pytest.mark.parametrize("proxy_cell", [proxy_param(c) for c in PROXY_CELLS])
def test_proxy(proxy_cell: ProxyCell, cell: World):
    session = cell.running if proxy_cell.target == "running" else cell.hibernated
    expected = proxy_cell.expect()
    if proxy_cell.kind == "WS":
        assert run(proxy_websocket, proxy_cell, cell, session) == expected
    else:
        status, body = run(proxy_http, proxy_cell, cell, session)
        assert status == expected, body[:300]
        if expected == 200 and proxy_cell.kind == "GET":
            assert body == b"hello, world\n"  # the session's own answer
        if expected == 200 and proxy_cell.kind == "POST":
            assert json.loads(body)["method"] == "POST"
    woken = Session.objects.get(pk=session.pk).state == SessionState.WAKING
    assert woken == proxy_cell.wakes()


# --- the portal socket, the agent socket, the tunnel ----------------------------------------
def socket_headers(world: World, principal: str, *, origin: bytes | None = SAME_ORIGIN) -> list[tuple[bytes, bytes]]:
    """A browser's handshake for people (portal cookie, Origin); others send their secret."""
    credential = world.credentials[principal]
    headers = [(b"host", HOST)]
    if origin is not None:
        headers.append((b"origin", origin))
    if credential.portal_cookie:
        headers.append((b"cookie", f"sessionid={credential.portal_cookie}".encode()))
    if credential.secret:
        headers.append((b"authorization", f"Bearer {credential.secret}".encode()))
    return headers


async def portal_socket(row: SocketRow, world: World, principal: str) -> Expectation:
    origin = b"http://evil.example" if "another origin" in row.name else SAME_ORIGIN
    ws = WebsocketCommunicator(application, "/ws/portal/", headers=socket_headers(world, principal, origin=origin))
    connected, _ = await ws.connect(timeout=TIMEOUT_S)
    if not connected:
        return REFUSE
    try:
        if "session.get" not in row.name:
            return ACCEPT
        await ws.send_json_to({"type": "session.get", "session_id": str(world.running.pk)})
        return (await ws.receive_json_from(timeout=TIMEOUT_S))["type"]
    finally:
        await ws.disconnect()


def agent_frame(payload: protocol.Payload) -> str:
    return protocol.encode(payload)


def register_frame(agent_id: str) -> str:
    return agent_frame(
        protocol.Register(
            agent_id=agent_id,
            instance_id="matrix-1",
            platform="docker",
            version="matrix",
            hostname="matrix",
            is_leader=False,
        )
    )


async def agent_socket(row: SocketRow, world: World, principal: str) -> Expectation:
    headers = socket_headers(world, principal, origin=None)
    ws = WebsocketCommunicator(application, "/api/v1/agents/connect", headers=headers)
    connected, code = await ws.connect(timeout=TIMEOUT_S)
    if not connected:
        assert code == 4401  # refused before the handshake completes
        return REFUSE
    try:
        if row.name.endswith("connect"):
            return ACCEPT
        if "register as" in row.name:
            await ws.send_to(text_data=register_frame(world.session_agent.agent_id))
            answer = json.loads(await ws.receive_from(timeout=TIMEOUT_S))
            assert await ws.receive_output(timeout=TIMEOUT_S) == {"type": "websocket.close", "code": 4403}
            return answer["payload"]["code"]
        await ws.send_to(text_data=register_frame(world.other_agent.agent_id))
        assert json.loads(await ws.receive_from(timeout=TIMEOUT_S))["type"] == "registered"
        if "session_status" in row.name:
            report = protocol.SessionStatus(
                session_id=str(world.running.pk), state="running", streaming_ready=True, endpoint="169.254.169.254:80"
            )
            await ws.send_to(text_data=agent_frame(report))
        else:
            await ws.send_to(text_data=agent_frame(protocol.Result(command_id=str(world.command.pk), ok=True)))
        answer = json.loads(await ws.receive_from(timeout=TIMEOUT_S))
        assert answer["type"] == "error", answer
        return answer["payload"]["code"]
    finally:
        await ws.disconnect()


async def tunnel_socket(row: SocketRow, world: World, principal: str, token: str | None = None) -> Expectation:
    """The proxy asks the session agent for a tunnel (``agents_app.tunnels.open_tunnel``); the
    principal then opens the agent's side of it (or of a stream nobody waits for)."""
    layer = get_channel_layer()
    leader_channel = await layer.new_channel()  # the session agent's leader, read by this test
    await database_sync_to_async(AgentInstance.objects.create)(
        agent=world.session_agent,
        instance_id="matrix-leader",
        pod="matrix",
        channel_name=leader_channel,
        is_leader=True,
        connected=True,
        connected_at=timezone.now(),
    )
    opener = asyncio.ensure_future(tunnels.open_tunnel(world.session_agent.pk, str(world.running.pk), 8080))
    try:
        asked = await asyncio.wait_for(layer.receive(leader_channel), TIMEOUT_S)
        stream_id = asked["payload"]["stream_id"]
        if "unknown stream" in row.name:
            stream_id = uuid.uuid4().hex
        headers = socket_headers(world, principal, origin=None)
        if token is not None:
            headers = [(b"authorization", f"Bearer {token}".encode())]
        ws = WebsocketCommunicator(application, f"/api/v1/agents/tunnel/{stream_id}", headers=headers)
        connected, _ = await ws.connect(timeout=TIMEOUT_S)
        if not connected:
            assert not opener.done()  # a refused socket leaves the proxy waiting for its agent
            return REFUSE
        (await asyncio.wait_for(opener, TIMEOUT_S)).close()  # the proxy got its end
        await ws.disconnect()
        return ACCEPT
    finally:
        opener.cancel()
        await asyncio.gather(opener, return_exceptions=True)


SURFACES = {"/ws/portal/": portal_socket, "/api/v1/agents/connect": agent_socket}

SOCKET_CELLS = [
    pytest.param(row, who, id=cell_id(row.name, who), marks=marks_for("socket", row.name, who))
    for row, expectations in SOCKET_ROWS.items()
    for who in PRINCIPALS
]


@pytest.fixture
def _tunnels_reach_this_replica(settings):
    settings.POD_URL = "http://testserver"  # where the agent is told to open its tunnel


@pytest.mark.usefixtures("_tunnels_reach_this_replica")
@pytest.mark.parametrize(("row", "who"), SOCKET_CELLS)
def test_socket(row: SocketRow, who: str, cell: World):
    scenario = SURFACES.get(row.route, tunnel_socket)
    assert run(scenario, row, cell, who) == SOCKET_ROWS[row][who]
    # Whatever another agent's token sent, alice's session and the session agent's command
    # are as they were.
    running = Session.objects.get(pk=cell.running.pk)
    assert (running.state, running.endpoint) == (SessionState.RUNNING, cell.running.endpoint)
    assert AgentCommand.objects.get(pk=cell.command.pk).state == cell.command.state


@pytest.mark.usefixtures("_tunnels_reach_this_replica")
def test_the_session_agent_opens_its_tunnel(cell: World):
    """The control cell of the tunnel rows: the agent the proxy asked is accepted."""
    row = next(r for r in SOCKET_ROWS if "pending stream" in r.name)
    assert run(tunnel_socket, row, cell, OTHER_AGENT, SESSION_AGENT_TOKEN) == ACCEPT


def test_every_person_reaches_the_portal_socket_only_with_the_portal_cookie(cell: World):
    """The portal socket takes no header credential: a JWT alone is refused."""
    for who in PEOPLE:
        headers = [(b"host", HOST), (b"origin", SAME_ORIGIN)]
        headers.append((b"authorization", f"Bearer {cell.credentials[who].secret}".encode()))

        async def connect(headers: list = headers) -> bool:
            ws = WebsocketCommunicator(application, "/ws/portal/", headers=headers)
            connected, _ = await ws.connect(timeout=TIMEOUT_S)
            if connected:
                await ws.disconnect()
            return connected

        assert run(connect) is False, who

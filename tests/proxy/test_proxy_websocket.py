"""The WebSocket proxy in-process (channels' WebsocketCommunicator) against the real upstream:
echo, subprotocols, close codes, refusals (credentials and ``Origin`` on both ways in), and
activity kept fresh by an open socket. Browsers' sockets are on the session's own origin."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from sessions_app import proxy
from sessions_app.models import Session, SessionState
from sessions_app.proxy import activity, auth, upstream
from tests.proxy.conftest import bearer, make_session, session_host

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.STREAMSPACE_PROXY_AUTH_CACHE_S = 0
    auth.clear_cache()
    activity._last_touch.clear()


@pytest.fixture
def running(alice, template, docker_agent, upstream_port):
    return make_session(alice, template, docker_agent, endpoint=f"127.0.0.1:{upstream_port}")


def communicator(session, user=None, *, path="/ws", subprotocols=None, origin=None) -> WebsocketCommunicator:
    """A browser's socket on the session's own origin, with its viewer cookie."""
    headers = [(b"host", session_host(session).encode())]
    if user is not None:
        headers.append((b"cookie", f"{auth.VIEWER_COOKIE}={auth.make_viewer_cookie(session.pk, user.pk)}".encode()))
    if origin:
        headers.append((b"origin", origin))
    return WebsocketCommunicator(proxy.websocket_app, path, headers=headers, subprotocols=subprotocols)


def api_communicator(session, headers: list[tuple[bytes, bytes]]) -> WebsocketCommunicator:
    """A socket on the portal's prefix."""
    return WebsocketCommunicator(
        proxy.websocket_app, f"/api/v1/http/{session.pk}/ws", headers=[(b"host", b"testserver"), *headers]
    )


async def test_echo_subprotocol_and_close_code(running, alice):
    ws = communicator(running, alice, subprotocols=["superchat", "chat"])
    connected, subprotocol = await ws.connect(timeout=5)
    assert connected and subprotocol == "superchat"
    await ws.send_to(text_data="hello")
    assert await ws.receive_from(timeout=5) == "hello"
    await ws.send_to(bytes_data=b"\x00\x01binary")
    assert (await ws.receive_output(timeout=5))["bytes"] == b"\x00\x01binary"
    await ws.send_to(text_data="!close 4005")
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 4005}
    await ws.wait(timeout=5)
    await upstream.close_clients()


async def test_the_session_origins_own_pages_may_connect(running, alice):
    ws = communicator(running, alice, origin=f"http://{session_host(running)}".encode())
    assert (await ws.connect(timeout=5))[0]
    await ws.send_to(text_data="hello")
    assert await ws.receive_from(timeout=5) == "hello"
    await ws.disconnect()
    await upstream.close_clients()


@pytest.mark.parametrize("who", ["anonymous", "bob", "cross-site", "the portal's page", "another session's page"])
async def test_refusals(who, running, alice, bob):
    user = {"anonymous": None, "bob": bob}.get(who, alice)
    origin = {
        "cross-site": b"http://evil.example",
        "the portal's page": b"http://testserver",
        "another session's page": f"http://{session_host(uuid.uuid4())}".encode(),
    }.get(who)
    ws = communicator(running, user, origin=origin)
    connected, code = await ws.connect(timeout=5)
    assert not connected
    assert code in (1008, 403)


async def test_the_prefix_takes_api_clients_only(running, alice):
    """A browser's socket carries cookies, never an Authorization header: on the portal's
    prefix, cookies open nothing; an API client's bearer does."""
    viewer = f"{auth.VIEWER_COOKIE}={auth.make_viewer_cookie(running.pk, alice.pk)}".encode()
    refused = api_communicator(running, [(b"cookie", viewer)])
    assert not (await refused.connect(timeout=5))[0]
    from_a_session = api_communicator(
        running,
        [(b"authorization", bearer(alice).encode()), (b"origin", f"http://{session_host(running)}".encode())],
    )
    assert not (await from_a_session.connect(timeout=5))[0]
    client = api_communicator(running, [(b"authorization", bearer(alice).encode())])
    assert (await client.connect(timeout=5))[0]
    await client.send_to(text_data="hello")
    assert await client.receive_from(timeout=5) == "hello"
    await client.disconnect()
    await upstream.close_clients()


async def test_hibernated_session_is_woken_and_told_to_retry(alice, template, docker_agent, upstream_port):
    session = await sync_to_async(make_session)(
        alice, template, docker_agent, endpoint=f"127.0.0.1:{upstream_port}", state=SessionState.HIBERNATED
    )
    ws = communicator(session, alice)
    connected, _ = await ws.connect(timeout=5)
    assert connected
    assert await ws.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": 4013,
    }  # 1013, as daphne can send it
    assert (await sync_to_async(Session.objects.get)(pk=session.pk)).state == SessionState.WAKING


async def test_open_socket_keeps_the_session_active(running, alice, settings):
    settings.STREAMSPACE_ACTIVITY_WRITE_INTERVAL_S = 2  # refreshed every second while open
    ws = communicator(running, alice)
    assert (await ws.connect(timeout=5))[0]
    old = timezone.now() - timedelta(hours=1)
    await sync_to_async(Session.objects.filter(pk=running.pk).update)(last_activity=old)
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        refreshed = await sync_to_async(Session.objects.get)(pk=running.pk)
        if refreshed.last_activity > old + timedelta(minutes=59):
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail("an idle but open WebSocket did not refresh last_activity")
    await ws.disconnect()

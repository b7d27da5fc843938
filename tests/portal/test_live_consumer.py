"""The browser's live channel /ws/portal/: auth, Origin check, group relay, and garbage frames.

Runs on the in-memory layer in the SQLite pass and on channels-redis in the PostgreSQL pass
(the same test, so serialization through Redis is covered)."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client

from sessions_app import services
from sessions_app.notify import user_group
from streamspace.asgi import application, django_asgi_app
from streamspace.routing import build_application
from tests.portal.conftest import make_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

ORIGIN = (b"origin", b"http://testserver")


@database_sync_to_async
def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def open_socket(user=None, *, origin=ORIGIN, app=application) -> tuple[WebsocketCommunicator, bool]:
    headers = [origin] if origin else []
    if user is not None:
        headers.append((b"cookie", await session_cookie(user)))
    comm = WebsocketCommunicator(app, "/ws/portal/", headers=headers)
    connected, _ = await comm.connect(timeout=5)
    return comm, connected


async def receive(comm: WebsocketCommunicator) -> dict:
    return json.loads(await comm.receive_from(timeout=5))


async def test_anonymous_is_refused():
    comm, connected = await open_socket(None)
    assert not connected


async def test_foreign_origin_is_refused(alice):
    comm, connected = await open_socket(alice, origin=(b"origin", b"https://evil.example"))
    assert not connected


async def test_a_session_origin_is_refused_even_inside_allowed_hosts(alice, settings):
    """A session's page (its own origin, under the wildcard the deployment may allow) must not
    open the portal's socket with the viewer's cookie."""
    settings.ALLOWED_HOSTS = ["testserver", ".localhost"]
    app = build_application(django_asgi_app)  # the validator reads ALLOWED_HOSTS when built
    session_page = (b"origin", b"http://0b5a1c3e-7f00-4d6a-9e55-2f1d0c8b9a77.localhost:8000")
    comm, connected = await open_socket(alice, origin=session_page, app=app)
    assert not connected
    comm, connected = await open_socket(alice, origin=(b"origin", b"http://other.localhost:8000"), app=app)
    assert connected  # the same wildcard still admits the portal's own names
    await comm.disconnect()


async def test_group_updates_reach_the_users_socket_only(alice, bob):
    alice_comm, ok_a = await open_socket(alice)
    bob_comm, ok_b = await open_socket(bob)
    assert ok_a and ok_b
    body = {"id": "x", "state": "starting", "status_message": "Pulling image"}
    await get_channel_layer().group_send(user_group(alice.pk), {"type": "session.update", "session": body})
    assert await receive(alice_comm) == {"type": "session.update", "session": body}
    assert await bob_comm.receive_nothing(timeout=0.3)
    await alice_comm.disconnect()
    await bob_comm.disconnect()


async def test_a_real_launch_is_pushed_on_commit(alice, demo_template, local_agent):
    comm, connected = await open_socket(alice)
    assert connected
    session = await database_sync_to_async(services.launch_session)(alice, demo_template)
    frame = await receive(comm)
    assert frame["type"] == "session.update"
    assert frame["session"]["id"] == str(session.pk) and frame["session"]["state"] == "pending"
    await database_sync_to_async(services.apply_agent_status)(session, "starting", message="Pulling image")
    frame = await receive(comm)
    assert frame["session"]["state"] == "starting" and frame["session"]["status_message"] == "Pulling image"
    await database_sync_to_async(services.apply_agent_status)(
        session, "running", streaming_ready=True, streaming_port=8080
    )
    assert (await receive(comm))["session"]["state"] == "running"
    await comm.disconnect()


async def test_session_get_answers_with_the_current_state(alice, bob, demo_template, local_agent):
    mine = await database_sync_to_async(make_session)(alice, demo_template, local_agent)
    theirs = await database_sync_to_async(make_session)(bob, demo_template, local_agent)
    comm, _ = await open_socket(alice)
    await comm.send_json_to({"type": "session.get", "session_id": str(mine.pk)})
    frame = await receive(comm)
    assert frame["type"] == "session.update" and frame["session"]["state"] == "running"
    await comm.send_json_to({"type": "session.get", "session_id": str(theirs.pk)})
    assert (await receive(comm))["code"] == "not_found"
    await comm.disconnect()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_frame"),
        ('{"type": 5}', "bad_frame"),
        ('{"no": "type"}', "bad_frame"),
        ('{"type": "explode"}', "unknown_type"),
        ('{"type": "session.get"}', "bad_session_id"),
        ('{"type": "session.get", "session_id": {"a": 1}}', "bad_session_id"),
        ('{"type": "session.get", "session_id": "' + "9" * 40 + '"}', "bad_session_id"),
        ('{"type": "ping", "pad": "' + "x" * 20000 + '"}', "frame_too_large"),
    ],
)
async def test_malformed_frames_get_an_error_and_the_socket_survives(alice, raw, code):
    comm, _ = await open_socket(alice)
    await comm.send_to(text_data=raw)
    frame = await receive(comm)
    assert frame["type"] == "error" and frame["code"] == code and frame["message"]
    await comm.send_json_to({"type": "ping"})
    assert await receive(comm) == {"type": "pong"}
    await comm.disconnect()


async def test_binary_frames_get_an_error(alice):
    comm, _ = await open_socket(alice)
    await comm.send_to(bytes_data=b"\x00\x01")
    assert (await receive(comm))["code"] == "bad_frame"
    await comm.disconnect()

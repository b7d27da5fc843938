"""Shares through the session proxy, in-process against the real upstream (docs/architecture.md §22):
share links exchanged on the session's origin, a viewer's input kept from the session, open
WebSockets closed the moment their share ends, and the "connected now" list."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from sessions_app import proxy, sharing
from sessions_app.models import Session, SessionState, Share
from sessions_app.proxy import activity, auth, connections, presence, upstream
from sessions_app.proxy.stream_auth import basic_credentials
from streamspace.audit.models import AuditEvent
from tests.proxy.conftest import make_session, session_host
from tests.support.asgi import asgi_http
from tests.support.factories import share

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.STREAMSPACE_PROXY_AUTH_CACHE_S = 30  # revocation must not wait for the cache
    auth.clear_cache()
    activity._last_touch.clear()


@pytest.fixture
def running(alice, template, docker_agent, upstream_port):
    return make_session(alice, template, docker_agent, endpoint=f"127.0.0.1:{upstream_port}")


def viewer_cookie(session, user) -> str:
    return f"{auth.VIEWER_COOKIE}={auth.make_viewer_cookie(session.pk, user.pk)}"


def socket_for(session, cookie: str) -> WebsocketCommunicator:
    headers = [(b"host", session_host(session).encode()), (b"cookie", cookie.encode())]
    return WebsocketCommunicator(proxy.websocket_app, "/ws", headers=headers)


async def visit(session, target: str, *, cookie: str = "", method: str = "GET", body: bytes = b""):
    headers = [("cookie", cookie)] if cookie else []
    return await asgi_http(proxy.http_app, method, target, headers=headers, body=body, host=session_host(session))


async def new_link(session, alice, role: str = "viewer", expires_in_s: int = 600) -> tuple[Share, str]:
    return await sync_to_async(sharing.create_link)(session, role=role, expires_in_s=expires_in_s, actor=alice)


async def exchange(session, key: str) -> str:
    """Open a link's URL: the link cookie it sets (``name=value``)."""
    reply = await visit(session, f"/?share={key}")
    assert reply.status == 303 and reply.header("location") == "/", reply.body
    return reply.header("set-cookie").split(";", 1)[0]


async def test_a_link_is_exchanged_for_a_cookie_and_recorded(running, alice):
    link, key = await new_link(running, alice)
    cookie = await exchange(running, key)
    assert key not in cookie
    assert (await visit(running, "/small", cookie=cookie)).status == 200
    use = await sync_to_async(AuditEvent.objects.get)(action="share.use")
    assert use.details["share_id"] == link.pk and use.actor_repr == "share link"


@pytest.mark.parametrize("case", ["unknown key", "revoked", "expired", "another session's"])
async def test_dead_links_are_refused(case, running, alice, template, docker_agent, upstream_port):
    link, key = await new_link(running, alice)
    target = running
    if case == "unknown key":
        key = key[::-1]
    elif case == "revoked":
        await sync_to_async(sharing.revoke)(link, actor=alice)
    elif case == "expired":
        await sync_to_async(Share.objects.filter(pk=link.pk).update)(expires_at=timezone.now() - timedelta(seconds=1))
    else:
        target = await sync_to_async(make_session)(alice, template, docker_agent, endpoint=f"127.0.0.1:{upstream_port}")
    reply = await visit(target, f"/?share={key}")
    assert reply.status == 403 and b"share_revoked" in reply.body


async def test_a_revoked_links_cookie_stops_at_once(running, alice):
    link, key = await new_link(running, alice)
    cookie = await exchange(running, key)
    assert (await visit(running, "/small", cookie=cookie)).status == 200  # now cached for 30 s
    await sync_to_async(sharing.revoke)(link, actor=alice)
    reply = await visit(running, "/small", cookie=cookie)
    assert reply.status == 403 and b"share_revoked" in reply.body


async def test_a_links_holder_never_wakes_the_session(alice, template, docker_agent, upstream_port):
    hibernated = await sync_to_async(make_session)(
        alice, template, docker_agent, endpoint=f"127.0.0.1:{upstream_port}", state=SessionState.HIBERNATED
    )
    _, key = await new_link(hibernated, alice, role="collaborator")
    cookie = await exchange(hibernated, key)
    reply = await visit(hibernated, "/", cookie=cookie)
    assert reply.status == 403 and b"wake_not_allowed" in reply.body
    assert (await sync_to_async(Session.objects.get)(pk=hibernated.pk)).state == SessionState.HIBERNATED


async def test_a_viewers_requests_that_may_be_input_are_refused(running, bob):
    await sync_to_async(share)(running, bob, role="viewer")
    cookie = viewer_cookie(running, bob)
    assert (await visit(running, "/small", cookie=cookie)).status == 200
    refused = await visit(running, "/upload", cookie=cookie, method="POST", body=b"keys")
    assert refused.status == 403 and b"view_only" in refused.body


async def test_a_collaborators_requests_pass(running, bob):
    await sync_to_async(share)(running, bob, role="collaborator")
    reply = await visit(running, "/upload", cookie=viewer_cookie(running, bob), method="POST", body=b"keys")
    assert reply.status == 200 and b'"length": 4' in reply.body.replace(b'"length":4', b'"length": 4')


async def test_a_viewer_gets_frames_but_sends_none(running, alice, bob):
    await sync_to_async(share)(running, bob, role="viewer")
    ws = socket_for(running, viewer_cookie(running, bob))
    assert (await ws.connect(timeout=5))[0]
    await ws.send_to(text_data="typed by the viewer")
    await ws.send_to(text_data="!close 4005")  # would end the socket if it reached the session
    assert await ws.receive_nothing(timeout=0.5)
    await ws.disconnect()
    # The same frames from a collaborator do reach it.
    await sync_to_async(Share.objects.filter(user=bob).update)(role="collaborator")
    auth.clear_cache()
    ws = socket_for(running, viewer_cookie(running, bob))
    assert (await ws.connect(timeout=5))[0]
    await ws.send_to(text_data="typed by a collaborator")
    assert await ws.receive_from(timeout=5) == "typed by a collaborator"
    await ws.disconnect()
    await upstream.close_clients()


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_revoking_closes_the_open_socket_and_it_was_listed(running, alice, bob):
    (bobs,) = await sync_to_async(share)(running, bob, role="collaborator")
    ws = socket_for(running, viewer_cookie(running, bob))
    assert (await ws.connect(timeout=5))[0]
    await ws.send_to(text_data="hello")
    assert await ws.receive_from(timeout=5) == "hello"

    async def listed() -> bool:
        return [e["user"] for e in presence.connected(running.pk)] == ["bob"]

    await wait_for(listed)
    assert presence.connected(running.pk)[0]["role"] == "collaborator"
    await sync_to_async(sharing.revoke)(bobs, actor=alice)
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": connections.REVOKED_CLOSE_CODE}

    async def gone() -> bool:
        return presence.connected(running.pk) == [] and connections.open_count(running.pk) == 0

    await wait_for(gone)
    await upstream.close_clients()


async def test_narrowing_a_share_closes_the_collaborators_socket(running, alice, bob):
    await sync_to_async(share)(running, bob, role="collaborator")
    ws = socket_for(running, viewer_cookie(running, bob))
    assert (await ws.connect(timeout=5))[0]
    await sync_to_async(sharing.grant)(running, user=bob, role="viewer", actor=alice)
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": connections.REVOKED_CLOSE_CODE}
    await upstream.close_clients()


async def test_the_owners_socket_survives_a_revocation(running, alice, bob):
    (bobs,) = await sync_to_async(share)(running, bob)
    ws = socket_for(running, viewer_cookie(running, alice))
    assert (await ws.connect(timeout=5))[0]
    await sync_to_async(sharing.revoke)(bobs, actor=alice)
    await ws.send_to(text_data="still here")
    assert await ws.receive_from(timeout=5) == "still here"
    await ws.disconnect()
    await upstream.close_clients()


async def test_a_links_socket_closes_on_revocation_and_on_expiry(running, alice):
    link, key = await new_link(running, alice, role="collaborator")
    ws = socket_for(running, await exchange(running, key))
    assert (await ws.connect(timeout=5))[0]

    async def listed() -> bool:
        return [(e["user"], e["share_id"]) for e in presence.connected(running.pk)] == [(None, link.pk)]

    await wait_for(listed)  # a link's holder is nobody by name
    await sync_to_async(sharing.revoke)(link, actor=alice)
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": connections.REVOKED_CLOSE_CODE}

    short, key = await new_link(running, alice, role="viewer")
    cookie = await exchange(running, key)
    soon = timezone.now() + timedelta(seconds=1)
    await sync_to_async(Share.objects.filter(pk=short.pk).update)(expires_at=soon)
    auth.clear_cache()
    ws = socket_for(running, cookie)
    assert (await ws.connect(timeout=5))[0]
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": connections.REVOKED_CLOSE_CODE}
    await upstream.close_clients()


async def test_stopping_the_session_closes_shared_sockets(running, alice, bob):
    from sessions_app import services

    await sync_to_async(share)(running, bob)
    ws = socket_for(running, viewer_cookie(running, bob))
    assert (await ws.connect(timeout=5))[0]
    await sync_to_async(services.stop_session)(running, actor=alice)
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": connections.REVOKED_CLOSE_CODE}
    await upstream.close_clients()


async def test_a_viewer_of_a_session_with_a_view_secret_is_presented_with_it(
    alice, bob, template, docker_agent, upstream_port
):
    """The shipped desktop images: the view-only credential goes upstream and the streaming
    server drops the viewer's input itself, so the proxy forwards the viewer's frames."""
    secured = await sync_to_async(make_session)(
        alice,
        template,
        docker_agent,
        endpoint=f"127.0.0.1:{upstream_port}",
        stream_secret="full-" + "a" * 40,
        stream_view_secret="view-" + "b" * 40,
    )
    await sync_to_async(share)(secured, bob, role="viewer")
    ws = socket_for(secured, viewer_cookie(secured, bob))
    assert (await ws.connect(timeout=5))[0]
    await ws.send_to(text_data="!headers")  # reaches the session: it is the server's to drop
    headers = dict((name.lower(), value) for name, value in json.loads(await ws.receive_from(timeout=5)))
    assert headers["authorization"] == basic_credentials("view-" + "b" * 40)
    await ws.disconnect()
    await upstream.close_clients()

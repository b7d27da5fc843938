"""One rule decides who may wake a hibernated session, whichever way it is asked.

A share recipient may view a session but not wake it: waking runs it again on the owner's
quota. The API refused that already; opening the hibernated session through the proxy (HTTP
or WebSocket) must refuse it too, while the owner and operators still wake it both ways.
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from agents_app.models import AgentCommand
from sessions_app import access, proxy
from sessions_app.models import Session, SessionState
from sessions_app.proxy import auth
from tests.proxy.conftest import make_session, session_host
from tests.support.asgi import asgi_http
from tests.support.clients import client_for
from tests.support.factories import share

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _fresh_cache(settings):
    settings.STREAMSPACE_PROXY_AUTH_CACHE_S = 0
    auth.clear_cache()
    yield
    auth.clear_cache()


@pytest.fixture
def hibernated(alice, bob, template, docker_agent, upstream_port):
    session = make_session(
        alice, template, docker_agent, endpoint=f"127.0.0.1:{upstream_port}", state=SessionState.HIBERNATED
    )
    share(session, bob)
    return session


def cookie(session, user) -> str:
    """The viewer cookie a browser holds on the session's own origin."""
    return f"{auth.VIEWER_COOKIE}={auth.make_viewer_cookie(session.pk, user.pk)}"


def open_page(session, user, *extra: tuple[str, str]):
    """A browser opening the session on its own origin."""
    headers = [("cookie", cookie(session, user)), *extra]
    return asgi_http(proxy.http_app, "GET", "/", headers=headers, host=session_host(session))


def open_socket(session, user) -> WebsocketCommunicator:
    headers = [(b"host", session_host(session).encode()), (b"cookie", cookie(session, user).encode())]
    return WebsocketCommunicator(proxy.websocket_app, "/ws", headers=headers)


def state_and_wakes(session) -> tuple[str, int]:
    return Session.objects.get(pk=session.pk).state, AgentCommand.objects.filter(session=session).count()


async def test_share_recipient_cannot_wake_through_the_proxy_over_http(hibernated, bob):
    reply = await open_page(hibernated, bob)
    assert reply.status == 403
    assert json.loads(reply.body)["code"] == "wake_not_allowed"
    assert await sync_to_async(state_and_wakes)(hibernated) == (SessionState.HIBERNATED, 0)
    html = await open_page(hibernated, bob, ("accept", "text/html"))
    assert html.status == 403 and b"only its owner" in html.body


async def test_share_recipient_cannot_wake_through_the_proxy_over_websocket(hibernated, bob):
    ws = open_socket(hibernated, bob)
    connected, _ = await ws.connect(timeout=5)
    assert not connected
    assert await sync_to_async(state_and_wakes)(hibernated) == (SessionState.HIBERNATED, 0)


@pytest.mark.parametrize("who", ["alice", "operator"])
async def test_owner_and_operator_wake_through_the_proxy(who, hibernated, alice, operator):
    user = alice if who == "alice" else operator
    reply = await open_page(hibernated, user)
    assert reply.status == 503 and json.loads(reply.body)["code"] == "session_starting"
    assert await sync_to_async(state_and_wakes)(hibernated) == (SessionState.WAKING, 1)


async def test_owner_wakes_through_the_proxy_over_websocket(hibernated, alice):
    ws = open_socket(hibernated, alice)
    connected, _ = await ws.connect(timeout=5)
    assert connected  # accepted, then closed with "try again later" while it wakes
    await ws.disconnect()
    assert await sync_to_async(state_and_wakes)(hibernated) == (SessionState.WAKING, 1)


def test_the_api_applies_the_same_rule(hibernated, alice, bob):
    assert client_for(bob).post(f"/api/v1/sessions/{hibernated.pk}/wake").status_code == 404
    assert state_and_wakes(hibernated) == (SessionState.HIBERNATED, 0)
    assert client_for(alice).post(f"/api/v1/sessions/{hibernated.pk}/wake").status_code == 202
    assert state_and_wakes(hibernated) == (SessionState.WAKING, 1)


def test_object_and_queryset_forms_agree(hibernated, alice, bob, operator, admin_user, django_user_model):
    stranger = django_user_model.objects.create_user("mallory", password="x")
    for user in (alice, bob, operator, admin_user, stranger):
        sessions = Session.objects.filter(pk=hibernated.pk)
        assert access.may_manage(user, hibernated) == sessions.managed_by(user).exists(), user
        assert access.may_view(user, hibernated) == sessions.visible_to(user).exists(), user
    assert [access.may_manage(u, hibernated) for u in (alice, bob, operator, stranger)] == [True, False, True, False]
    assert [access.may_view(u, hibernated) for u in (alice, bob, operator, stranger)] == [True, True, True, False]

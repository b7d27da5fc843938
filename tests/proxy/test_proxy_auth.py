"""Who may reach a session through the proxy: the authorization matrix, in-process.

The ASGI app is called directly (as daphne would) against a real upstream process; the
same rules are exercised over a real daphne process in ``test_proxy_daphne.py``.
"""

from __future__ import annotations

import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.core import signing
from rest_framework_simplejwt.tokens import RefreshToken

from sessions_app import proxy
from sessions_app.models import Session, SessionState
from sessions_app.proxy import auth, upstream
from sessions_app.viewer import make_viewer_token
from tests.proxy.conftest import asgi_http, make_session

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _fresh_cache(settings):
    settings.STREAMSPACE_PROXY_AUTH_CACHE_S = 0
    auth.clear_cache()
    yield
    auth.clear_cache()


@pytest.fixture
async def closing_clients():
    yield
    await upstream.close_clients()


@pytest.fixture
def running(alice, template, docker_agent, upstream_port):
    return make_session(alice, template, docker_agent, endpoint=f"127.0.0.1:{upstream_port}")


def viewer_cookie_for(session, user) -> str:
    return f"{auth.VIEWER_COOKIE}={auth.make_viewer_cookie(session.pk, user.pk)}"


async def get(path: str, *, cookie: str | None = None, headers: dict | None = None, method: str = "GET"):
    extra = dict(headers or {})
    if cookie:
        extra["cookie"] = cookie
    return await asgi_http(proxy.http_app, method, path, headers=list(extra.items()))


async def test_token_sets_scoped_cookie_and_redirects_without_token(running, alice, settings, closing_clients):
    settings.DEBUG = True
    token = make_viewer_token(running.pk, alice.pk)
    reply = await get(f"/api/v1/http/{running.pk}/echo?a=1&token={token}&b=2")
    assert reply.status == 303
    assert reply.header("location") == f"/api/v1/http/{running.pk}/echo?a=1&b=2"
    cookie = reply.header("set-cookie")
    assert cookie.startswith(f"{auth.VIEWER_COOKIE}=")
    assert f"Path=/api/v1/http/{running.pk}/" in cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # only with DEBUG on
    value = cookie.split(";")[0]
    followed = await get(reply.header("location"), cookie=value)
    assert followed.status == 200, followed.body
    assert json.loads(followed.body)["query"] == "a=1&b=2"


async def test_cookie_is_secure_when_not_debug(running, alice, settings, closing_clients):
    settings.DEBUG = False
    reply = await get(f"/api/v1/http/{running.pk}/?token={make_viewer_token(running.pk, alice.pk)}")
    assert "Secure" in reply.header("set-cookie")


@pytest.fixture
def personas(alice, bob, admin_user, operator):
    return {"alice": alice, "bob": bob, "admin": admin_user, "operator": operator}


def access_token(user) -> str:
    return str(RefreshToken.for_user(user).access_token)


@pytest.mark.parametrize("who", ["alice", "admin", "operator", "shared"])
async def test_allowed_users_pass(who, running, personas, closing_clients):
    if who == "shared":
        await sync_to_async(running.shared_with.add)(personas["bob"])
        user = personas["bob"]
    else:
        user = personas[who]
    reply = await get(f"/api/v1/http/{running.pk}/small", cookie=viewer_cookie_for(running, user))
    assert reply.status == 200
    assert reply.body == b"hello, world\n"


async def test_other_user_gets_403(running, bob, closing_clients):
    reply = await get(f"/api/v1/http/{running.pk}/small", cookie=viewer_cookie_for(running, bob))
    assert reply.status == 403
    token = make_viewer_token(running.pk, bob.pk)  # even with a well-formed token of his own
    assert (await get(f"/api/v1/http/{running.pk}/?token={token}")).status == 403


async def test_anonymous_gets_401_and_unknown_session_404(running, closing_clients):
    reply = await get(f"/api/v1/http/{running.pk}/small")
    assert reply.status == 401
    assert json.loads(reply.body)["code"] == "not_authenticated"
    html = await get(f"/api/v1/http/{running.pk}/small", headers={"accept": "text/html"})
    assert html.status == 401 and b"<html" in html.body
    assert (await get(f"/api/v1/http/{uuid.uuid4()}/small")).status == 404
    assert (await get("/api/v1/http/not-a-uuid/small")).status == 404


async def test_expired_forged_and_other_session_tokens_refused(running, alice, bob, template, docker_agent, settings):
    other = await sync_to_async(make_session)(alice, template, docker_agent, endpoint="127.0.0.1:9")
    cases = {
        "expired": signing.dumps(
            {"s": str(running.pk), "u": alice.pk}, salt="streamspace.viewer-token", compress=False
        ),
        "forged": make_viewer_token(running.pk, alice.pk)[:-4] + "AAAA",
        "other session": make_viewer_token(other.pk, alice.pk),
        "garbage": "%00%0d%0a",
    }
    settings.STREAMSPACE_VIEWER_TOKEN_TTL_S = 60
    for name, token in cases.items():
        if name == "expired":
            settings.STREAMSPACE_VIEWER_TOKEN_TTL_S = -1
        reply = await get(f"/api/v1/http/{running.pk}/?token={token}")
        settings.STREAMSPACE_VIEWER_TOKEN_TTL_S = 60
        assert reply.status == 403, name
        assert reply.header("set-cookie") is None, name
    # A viewer cookie for another session does not open this one.
    assert (await get(f"/api/v1/http/{running.pk}/", cookie=viewer_cookie_for(other, alice))).status == 401


async def test_token_replay_after_stop_is_refused(running, alice, closing_clients):
    token = make_viewer_token(running.pk, alice.pk)
    cookie = viewer_cookie_for(running, alice)
    assert (await get(f"/api/v1/http/{running.pk}/?token={token}")).status == 303
    await sync_to_async(Session.objects.filter(pk=running.pk).update)(state=SessionState.STOPPED)
    replay = await get(f"/api/v1/http/{running.pk}/?token={token}")
    assert replay.status == 410
    assert replay.header("set-cookie") is None
    assert (await get(f"/api/v1/http/{running.pk}/small", cookie=cookie)).status == 410


async def test_jwt_and_portal_session_cookie_work(running, alice, bob, closing_clients):
    access = await sync_to_async(access_token)(alice)
    reply = await get(f"/api/v1/http/{running.pk}/small", headers={"authorization": f"Bearer {access}"})
    assert reply.status == 200
    bob_access = await sync_to_async(access_token)(bob)
    assert (
        await get(f"/api/v1/http/{running.pk}/small", headers={"authorization": f"Bearer {bob_access}"})
    ).status == 403

    from django.test import Client

    client = Client()
    await sync_to_async(client.force_login)(alice)
    session_cookie = f"sessionid={client.cookies['sessionid'].value}"
    assert (await get(f"/api/v1/http/{running.pk}/small", cookie=session_cookie)).status == 200
    assert (await get(f"/api/v1/http/{running.pk}/small", cookie="sessionid=forged")).status == 401


async def test_the_bearer_header_is_read_by_the_shared_parser(running, alice, closing_clients):
    access = await sync_to_async(access_token)(alice)
    path = f"/api/v1/http/{running.pk}/small"
    assert (await get(path, headers={"authorization": f"bearer   {access}"})).status == 200
    assert (await get(path, headers={"authorization": f"Basic {access}"})).status == 401
    assert (await get(path, headers={"authorization": f"Bearer {access} x"})).status == 401


async def test_deactivated_user_loses_access(running, alice, closing_clients):
    cookie = viewer_cookie_for(running, alice)
    assert (await get(f"/api/v1/http/{running.pk}/small", cookie=cookie)).status == 200
    await sync_to_async(type(alice).objects.filter(pk=alice.pk).update)(is_active=False)
    assert (await get(f"/api/v1/http/{running.pk}/small", cookie=cookie)).status == 401


async def test_share_revoked_is_seen_after_cache_ttl(running, bob, settings, closing_clients):
    settings.STREAMSPACE_PROXY_AUTH_CACHE_S = 30
    await sync_to_async(running.shared_with.add)(bob)
    cookie = viewer_cookie_for(running, bob)
    assert (await get(f"/api/v1/http/{running.pk}/small", cookie=cookie)).status == 200
    await sync_to_async(running.shared_with.remove)(bob)
    # Cached for the TTL (the documented trade-off), refused once the entry is gone.
    assert (await get(f"/api/v1/http/{running.pk}/small", cookie=cookie)).status == 200
    auth.clear_cache()
    assert (await get(f"/api/v1/http/{running.pk}/small", cookie=cookie)).status == 403


async def test_credentials_never_reach_the_session(running, alice, closing_clients):
    access = await sync_to_async(access_token)(alice)
    cookie = f"{viewer_cookie_for(running, alice)}; sessionid=abc; csrftoken=def; app=keep"
    reply = await get(
        f"/api/v1/http/{running.pk}/echo",
        cookie=cookie,
        headers={
            "authorization": f"Bearer {access}",
            "x-forwarded-for": "6.6.6.6",
            "x-forwarded-host": "evil.example",
            "forwarded": "for=6.6.6.6",
            "connection": "keep-alive, x-drop-me",
            "x-drop-me": "1",
            "x-keep-me": "1",
        },
    )
    assert reply.status == 200
    seen = {k.lower(): v for k, v in json.loads(reply.body)["headers"]}
    assert "authorization" not in seen
    assert seen["cookie"] == "app=keep"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-host"] == "testserver"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-prefix"] == f"/api/v1/http/{running.pk}"
    assert "forwarded" not in seen and "x-drop-me" not in seen
    assert seen["x-keep-me"] == "1"


async def test_hibernated_session_wakes_on_access(alice, template, docker_agent, upstream_port, closing_clients):
    session = await sync_to_async(make_session)(
        alice, template, docker_agent, endpoint=f"127.0.0.1:{upstream_port}", state=SessionState.HIBERNATED
    )
    cookie = viewer_cookie_for(session, alice)
    html = await get(f"/api/v1/http/{session.pk}/", cookie=cookie, headers={"accept": "text/html"})
    assert html.status == 503
    assert html.header("retry-after") == "5"
    assert b"waking up" in html.body and b".streamspace/status" in html.body
    refreshed = await sync_to_async(Session.objects.get)(pk=session.pk)
    assert refreshed.state == SessionState.WAKING
    api = await get(f"/api/v1/http/{session.pk}/data.json", cookie=cookie)
    assert api.status == 503 and json.loads(api.body)["code"] == "session_starting"
    status = await get(f"/api/v1/http/{session.pk}/.streamspace/status", cookie=cookie)
    assert json.loads(status.body) == {"state": "waking", "ready": False, "status_message": "Waking up"}
    await sync_to_async(Session.objects.filter(pk=session.pk).update)(state=SessionState.RUNNING, streaming_ready=True)
    status = await get(f"/api/v1/http/{session.pk}/.streamspace/status", cookie=cookie)
    assert json.loads(status.body)["ready"] is True
    assert (await get(f"/api/v1/http/{session.pk}/small", cookie=cookie)).status == 200


async def test_traffic_counts_as_activity(running, alice, settings, closing_clients):
    from datetime import timedelta

    from django.utils import timezone

    from sessions_app.proxy import activity

    old = timezone.now() - timedelta(hours=1)
    await sync_to_async(Session.objects.filter(pk=running.pk).update)(last_activity=old)
    activity._last_touch.clear()
    assert (await get(f"/api/v1/http/{running.pk}/small", cookie=viewer_cookie_for(running, alice))).status == 200
    refreshed = await sync_to_async(Session.objects.get)(pk=running.pk)
    assert refreshed.last_activity > old + timedelta(minutes=59)


async def test_missing_trailing_slash_redirects(running, alice, closing_clients):
    reply = await get(f"/api/v1/http/{running.pk}", cookie=viewer_cookie_for(running, alice))
    assert reply.status == 303
    assert reply.header("location") == f"/api/v1/http/{running.pk}/"

"""Who may reach a session through the proxy: the authorization matrix, in-process.

Two ways in. Browsers use the session's own origin (``<id>.localhost`` here): a viewer token
exchanged for a host-only cookie, and nothing else. API clients use the portal's prefix
``/api/v1/http/<id>/`` with an ``Authorization`` header, and nothing else: neither the
portal's login cookie nor a viewer cookie opens a session there.

The ASGI app is called directly (as daphne would) against a real upstream process; the
same rules are exercised over a real daphne process in ``test_proxy_daphne.py``.
"""

from __future__ import annotations

import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.core import signing
from django.test import Client

from sessions_app import proxy
from sessions_app.models import Session, SessionState, Share
from sessions_app.proxy import auth, upstream
from sessions_app.viewer import make_viewer_token
from streamspace.accounts.tokens import create_token
from streamspace.asgi import application
from tests.proxy.conftest import bearer, make_session, session_host
from tests.support.asgi import asgi_http
from tests.support.factories import share

pytestmark = [pytest.mark.django_db(transaction=True)]

PORTAL = "http://testserver"  # the origin the tests' viewer tokens were issued from


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


def viewer_cookie_for(session, user, portal: str = PORTAL) -> str:
    return f"{auth.VIEWER_COOKIE}={auth.make_viewer_cookie(session.pk, user.pk, portal=portal)}"


def token_for(session, user) -> str:
    return make_viewer_token(session.pk, user.pk, portal=PORTAL)


async def visit(session, path: str, *, cookie: str | None = None, headers: dict | None = None, **options):
    """A request to the session's own origin (what a browser does)."""
    extra = dict(headers or {})
    if cookie:
        extra["cookie"] = cookie
    session_id = getattr(session, "pk", session)
    return await asgi_http(
        proxy.http_app, "GET", path, headers=list(extra.items()), host=session_host(session_id), **options
    )


async def api(path: str, *, authorization: str | None = None, headers: dict | None = None, method: str = "GET"):
    """A request to the portal's prefix (what an API client does)."""
    extra = dict(headers or {})
    if authorization:
        extra["authorization"] = authorization
    return await asgi_http(proxy.http_app, method, path, headers=list(extra.items()))


def portal_session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


# --- the session's own origin ------------------------------------------------------------
async def test_token_sets_a_host_only_cookie_and_redirects_without_token(running, alice, settings, closing_clients):
    settings.DEBUG = True
    reply = await visit(running, f"/echo?a=1&token={token_for(running, alice)}&b=2")
    assert reply.status == 303
    assert reply.header("location") == "/echo?a=1&b=2"
    cookie = reply.header("set-cookie")
    assert cookie.startswith(f"{auth.VIEWER_COOKIE}=")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert "domain" not in attributes  # this host only: never another session's, never the portal's
    assert "Path=/;" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain HTTP with DEBUG on
    assert reply.header("content-security-policy") == f"frame-ancestors {PORTAL}"
    value = cookie.split(";")[0]
    followed = await visit(running, reply.header("location"), cookie=value)
    assert followed.status == 200, followed.body
    assert json.loads(followed.body)["query"] == "a=1&b=2"
    assert followed.header("content-security-policy") == f"frame-ancestors {PORTAL}"


async def test_cookie_is_secure_over_https_or_when_not_debug(running, alice, settings, closing_clients):
    settings.DEBUG = False
    reply = await visit(running, f"/?token={token_for(running, alice)}")
    assert "Secure" in reply.header("set-cookie") and "SameSite=Lax" in reply.header("set-cookie")
    settings.DEBUG = True
    reply = await visit(running, f"/?token={token_for(running, alice)}", scheme="https")
    assert "Secure" in reply.header("set-cookie")


async def test_a_cross_site_portal_gets_a_partitioned_cookie(running, alice, closing_clients):
    """``localhost`` framing ``<id>.localhost`` is cross-site: a Lax cookie would never be sent in
    the frame, so the cookie lives in the portal site's partition instead (CHIPS)."""
    reply = await visit(running, f"/?token={token_for(running, alice)}", headers={"sec-fetch-site": "cross-site"})
    cookie = reply.header("set-cookie")
    assert "SameSite=None" in cookie and "Partitioned" in cookie and "Secure" in cookie and "HttpOnly" in cookie
    assert "domain=" not in cookie.lower()
    same_site = await visit(running, f"/?token={token_for(running, alice)}", headers={"sec-fetch-site": "same-site"})
    assert "SameSite=Lax" in same_site.header("set-cookie")


@pytest.fixture
def personas(alice, bob, admin_user, operator):
    return {"alice": alice, "bob": bob, "admin": admin_user, "operator": operator}


@pytest.mark.parametrize("who", ["alice", "admin", "operator", "shared"])
async def test_allowed_users_pass(who, running, personas, closing_clients):
    if who == "shared":
        await sync_to_async(share)(running, personas["bob"])
        user = personas["bob"]
    else:
        user = personas[who]
    reply = await visit(running, "/small", cookie=viewer_cookie_for(running, user))
    assert reply.status == 200
    assert reply.body == b"hello, world\n"


async def test_other_user_gets_403(running, bob, closing_clients):
    reply = await visit(running, "/small", cookie=viewer_cookie_for(running, bob))
    assert reply.status == 403
    # even with a well-formed token of his own
    assert (await visit(running, f"/?token={token_for(running, bob)}")).status == 403


async def test_anonymous_gets_401_and_unknown_session_404(running, closing_clients):
    reply = await visit(running, "/small")
    assert reply.status == 401
    assert json.loads(reply.body)["code"] == "not_authenticated"
    assert reply.header("content-security-policy") == "frame-ancestors 'none'"  # no portal known: nobody frames it
    html = await visit(running, "/small", headers={"accept": "text/html"})
    assert html.status == 401 and b"<html" in html.body
    assert b"postMessage" not in html.body  # no portal known: nobody to report to
    assert (await visit(uuid.uuid4(), "/small")).status == 404


async def test_expired_forged_and_other_session_tokens_refused(running, alice, bob, template, docker_agent, settings):
    other = await sync_to_async(make_session)(alice, template, docker_agent, endpoint="127.0.0.1:9")
    cases = {
        "expired": signing.dumps(
            {"s": str(running.pk), "u": alice.pk, "o": PORTAL}, salt="streamspace.viewer-token", compress=False
        ),
        "forged": token_for(running, alice)[:-4] + "AAAA",
        "other session": token_for(other, alice),
        "garbage": "%00%0d%0a",
    }
    settings.STREAMSPACE_VIEWER_TOKEN_TTL_S = 60
    for name, token in cases.items():
        if name == "expired":
            settings.STREAMSPACE_VIEWER_TOKEN_TTL_S = -1
        reply = await visit(running, f"/?token={token}", headers={"accept": "text/html"})
        settings.STREAMSPACE_VIEWER_TOKEN_TTL_S = 60
        assert reply.status == 403, name
        assert reply.header("set-cookie") is None, name
        if name in ("expired", "other session"):
            # Signed by us: the portal that framed it hears why (and only that portal).
            assert f'"status": 403, "code": "invalid_token"}}, "{PORTAL}"'.encode() in reply.body, name
        else:
            assert b"postMessage" not in reply.body, name
    # A viewer cookie for another session does not open this one.
    assert (await visit(running, "/", cookie=viewer_cookie_for(other, alice))).status == 401


async def test_token_replay_after_stop_is_refused(running, alice, closing_clients):
    token = token_for(running, alice)
    cookie = viewer_cookie_for(running, alice)
    assert (await visit(running, f"/?token={token}")).status == 303
    await sync_to_async(Session.objects.filter(pk=running.pk).update)(state=SessionState.STOPPED)
    replay = await visit(running, f"/?token={token}")
    assert replay.status == 410
    assert replay.header("set-cookie") is None
    assert (await visit(running, "/small", cookie=cookie)).status == 410


async def test_the_portal_credentials_do_not_open_a_session_origin(running, alice, closing_clients):
    """Only the viewer cookie counts on a session's origin: not a JWT, not the portal's login cookie."""
    assert (await visit(running, "/small", headers={"authorization": bearer(alice)})).status == 401
    session_cookie = await sync_to_async(portal_session_cookie)(alice)
    assert (await visit(running, "/small", cookie=session_cookie)).status == 401


async def test_the_first_cookie_of_this_session_wins(running, alice, template, docker_agent, closing_clients):
    """A browser may send two viewer cookies (one per partition, or one tossed by another
    session's page): the one for this session opens it."""
    other = await sync_to_async(make_session)(alice, template, docker_agent, endpoint="127.0.0.1:9")
    both = f"{viewer_cookie_for(other, alice)}; {viewer_cookie_for(running, alice)}"
    assert (await visit(running, "/small", cookie=both)).status == 200


async def test_deactivated_user_loses_access(running, alice, closing_clients):
    cookie = viewer_cookie_for(running, alice)
    assert (await visit(running, "/small", cookie=cookie)).status == 200
    await sync_to_async(type(alice).objects.filter(pk=alice.pk).update)(is_active=False)
    assert (await visit(running, "/small", cookie=cookie)).status == 401


async def test_share_revoked_is_seen_after_cache_ttl(running, bob, settings, closing_clients):
    settings.STREAMSPACE_PROXY_AUTH_CACHE_S = 30
    await sync_to_async(share)(running, bob)
    cookie = viewer_cookie_for(running, bob)
    assert (await visit(running, "/small", cookie=cookie)).status == 200
    await sync_to_async(Share.objects.filter(session=running, user=bob).delete)()
    # Cached for the TTL (the documented trade-off), refused once the entry is gone.
    assert (await visit(running, "/small", cookie=cookie)).status == 200
    auth.clear_cache()
    assert (await visit(running, "/small", cookie=cookie)).status == 403


async def test_credentials_never_reach_the_session(running, alice, closing_clients):
    cookie = f"{viewer_cookie_for(running, alice)}; sessionid=abc; csrftoken=def; app=keep"
    reply = await visit(
        running,
        "/echo",
        cookie=cookie,
        headers={
            "authorization": "Bearer whatever",
            "x-forwarded-for": "6.6.6.6",
            "x-forwarded-host": "evil.example",
            "x-forwarded-prefix": "/evil",
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
    assert seen["x-forwarded-host"] == session_host(running)
    assert seen["x-forwarded-proto"] == "http"
    assert "x-forwarded-prefix" not in seen  # served at "/": there is no prefix
    assert "forwarded" not in seen and "x-drop-me" not in seen
    assert seen["x-keep-me"] == "1"


async def test_redirects_and_cookies_of_the_session_stay_on_its_origin(running, alice, closing_clients):
    cookie = viewer_cookie_for(running, alice)
    reply = await visit(running, "/redirect", cookie=cookie)
    assert reply.status == 302 and reply.header("location") == "/target?x=1"
    cookies = (await visit(running, "/cookies", cookie=cookie)).headers_named("set-cookie")
    assert "app=1; Path=/; HttpOnly" in cookies  # its Domain dropped: this host only
    assert "deep=2; Path=/sub" in cookies
    assert not any(c.startswith(("sessionid=", "streamspace_viewer=")) for c in cookies)


async def test_hibernated_session_wakes_on_access(alice, template, docker_agent, upstream_port, closing_clients):
    session = await sync_to_async(make_session)(
        alice, template, docker_agent, endpoint=f"127.0.0.1:{upstream_port}", state=SessionState.HIBERNATED
    )
    cookie = viewer_cookie_for(session, alice)
    html = await visit(session, "/", cookie=cookie, headers={"accept": "text/html"})
    assert html.status == 503
    assert html.header("retry-after") == "5"
    assert html.header("content-security-policy") == f"frame-ancestors {PORTAL}"
    assert b"waking up" in html.body and b'"/.streamspace/status"' in html.body
    refreshed = await sync_to_async(Session.objects.get)(pk=session.pk)
    assert refreshed.state == SessionState.WAKING
    page = await visit(session, "/data.json", cookie=cookie)
    assert page.status == 503 and json.loads(page.body)["code"] == "session_starting"
    status = await visit(session, "/.streamspace/status", cookie=cookie)
    assert json.loads(status.body) == {"state": "waking", "ready": False, "status_message": "Waking up"}
    await sync_to_async(Session.objects.filter(pk=session.pk).update)(state=SessionState.RUNNING, streaming_ready=True)
    status = await visit(session, "/.streamspace/status", cookie=cookie)
    assert json.loads(status.body)["ready"] is True
    assert (await visit(session, "/small", cookie=cookie)).status == 200


async def test_an_unreachable_session_reports_to_the_portal_frame(alice, template, docker_agent, closing_clients):
    session = await sync_to_async(make_session)(alice, template, docker_agent, endpoint="127.0.0.1:9")
    await sync_to_async(Session.objects.filter(pk=session.pk).update)(agent=None)
    html = await visit(session, "/", cookie=viewer_cookie_for(session, alice), headers={"accept": "text/html"})
    assert html.status == 502
    assert f'{{"type": "streamspace.proxy", "status": 502, "code": "upstream_unreachable"}}, "{PORTAL}"'.encode() in (
        html.body
    )
    assert f"href='{PORTAL}/'".encode() in html.body  # "Portal" leads to the portal, not the session's "/"


async def test_traffic_counts_as_activity(running, alice, settings, closing_clients):
    from datetime import timedelta

    from django.utils import timezone

    from sessions_app.proxy import activity

    old = timezone.now() - timedelta(hours=1)
    await sync_to_async(Session.objects.filter(pk=running.pk).update)(last_activity=old)
    activity._last_touch.clear()
    assert (await visit(running, "/small", cookie=viewer_cookie_for(running, alice))).status == 200
    refreshed = await sync_to_async(Session.objects.get)(pk=running.pk)
    assert refreshed.last_activity > old + timedelta(minutes=59)


async def test_every_path_of_a_session_origin_is_the_sessions(running, alice, closing_clients):
    """The whole application, by Host: the portal's own paths on a session origin reach the
    session (a relative fetch('/api/v1/tokens') in its page never reaches the portal)."""
    cookie = viewer_cookie_for(running, alice)
    host = session_host(running, 8000)
    for path in ("/api/v1/tokens", "/api/v1/users", "/accounts/login/", "/ops/", f"/api/v1/http/{running.pk}/small"):
        reply = await asgi_http(application, "GET", path, headers=[("cookie", cookie)], host=host)
        assert "aiohttp" in reply.header("server"), path  # the session's own server answered
        assert reply.header("content-security-policy") == f"frame-ancestors {PORTAL}", path
        anonymous = await asgi_http(application, "GET", path, host=host)
        assert anonymous.status == 401, path
        assert anonymous.header("content-security-policy") == "frame-ancestors 'none'", path  # the proxy, not Django
    echoed = await asgi_http(application, "GET", "/echo/api/v1/users?x=1", headers=[("cookie", cookie)], host=host)
    assert json.loads(echoed.body)["path"] == "/echo/api/v1/users"


# --- the portal's prefix: API clients ------------------------------------------------------
async def test_jwt_and_api_tokens_work_on_the_prefix(running, alice, bob, admin_user, closing_clients):
    assert (await api(f"/api/v1/http/{running.pk}/small", authorization=bearer(alice))).status == 200
    assert (await api(f"/api/v1/http/{running.pk}/small", authorization=bearer(bob))).status == 403
    assert (await api(f"/api/v1/http/{running.pk}/small", authorization="Bearer forged")).status == 401

    def key(user, scope: str) -> str:
        return "Token " + create_token(user, name=f"{scope}-key", scope=scope)[1]

    write, read = await sync_to_async(key)(alice, "write"), await sync_to_async(key)(alice, "read")
    assert (await api(f"/api/v1/http/{running.pk}/small", authorization=write)).status == 200
    refused = await api(f"/api/v1/http/{running.pk}/small", authorization=read)
    assert refused.status == 403 and json.loads(refused.body)["code"] == "insufficient_scope"
    assert (await api(f"/api/v1/http/{running.pk}/small", authorization="Token ssp_nope_x")).status == 401
    # An admin's role counts only through an admin-scoped token.
    admin_write, admin_scope = (
        await sync_to_async(key)(admin_user, "write"),
        await sync_to_async(key)(admin_user, "admin"),
    )
    assert (await api(f"/api/v1/http/{running.pk}/small", authorization=admin_write)).status == 403
    assert (await api(f"/api/v1/http/{running.pk}/small", authorization=admin_scope)).status == 200


async def test_the_authorization_header_is_read_by_the_shared_parser(running, alice, closing_clients):
    access = bearer(alice).removeprefix("Bearer ")
    path = f"/api/v1/http/{running.pk}/small"
    assert (await api(path, authorization=f"bearer   {access}")).status == 200
    assert (await api(path, authorization=f"Basic {access}")).status == 401
    assert (await api(path, authorization=f"Bearer {access} x")).status == 401


async def test_cookies_do_not_open_the_prefix(running, alice, closing_clients):
    """The review's attack: the portal's login cookie (or a viewer cookie) on the portal's own
    origin must never get session content served there."""
    session_cookie = await sync_to_async(portal_session_cookie)(alice)
    for cookie in (session_cookie, viewer_cookie_for(running, alice)):
        reply = await api(f"/api/v1/http/{running.pk}/small", headers={"cookie": cookie})
        assert reply.status == 401, cookie
        assert reply.body != b"hello, world\n"


async def test_a_browser_on_the_prefix_is_sent_to_the_viewer(running, alice, closing_clients):
    session_cookie = await sync_to_async(portal_session_cookie)(alice)
    for headers in ({"accept": "text/html"}, {"sec-fetch-mode": "navigate", "cookie": session_cookie}):
        reply = await api(f"/api/v1/http/{running.pk}/", headers=headers)
        assert reply.status == 303
        assert reply.header("location") == f"/sessions/{running.pk}/view"
    # A script's fetch is not a navigation: it gets the API's 401.
    fetch = await api(f"/api/v1/http/{running.pk}/", headers={"sec-fetch-mode": "cors", "accept": "text/html"})
    assert fetch.status == 401


async def test_a_viewer_link_on_the_prefix_moves_to_the_session_origin(running, alice, settings, closing_clients):
    token = token_for(running, alice)
    secure = await api(f"/api/v1/http/{running.pk}/?token={token}")  # without DEBUG: HTTPS
    assert secure.header("location") == f"https://{running.pk}.localhost/?token={token}"
    settings.DEBUG = True  # with it, the scheme the request came with
    reply = await api(f"/api/v1/http/{running.pk}/echo?a=1&token={token}")
    assert reply.status == 303
    location = reply.header("location")
    assert location == f"http://{running.pk}.localhost/echo?a=1&token={token}"
    assert reply.header("set-cookie") is None  # no credential is ever issued on the portal's origin
    exchanged = await visit(running, location.removeprefix(f"http://{running.pk}.localhost"))
    assert exchanged.status == 303 and exchanged.header("set-cookie")


async def test_prefix_answers_are_sandboxed(running, alice, closing_clients):
    """Should a browser ever render a prefix answer, it runs in an opaque origin, not the portal's."""
    ok = await api(f"/api/v1/http/{running.pk}/small", authorization=bearer(alice))
    refused = await api(f"/api/v1/http/{running.pk}/small")
    for reply in (ok, refused):
        assert reply.header("content-security-policy") == "sandbox; frame-ancestors 'none'"


async def test_credentials_never_reach_the_session_from_the_prefix(running, alice, closing_clients):
    reply = await api(
        f"/api/v1/http/{running.pk}/echo",
        authorization=bearer(alice),
        headers={"cookie": "sessionid=abc; csrftoken=def; app=keep", "x-forwarded-prefix": "/evil"},
    )
    assert reply.status == 200
    seen = {k.lower(): v for k, v in json.loads(reply.body)["headers"]}
    assert "authorization" not in seen
    assert seen["cookie"] == "app=keep"
    assert seen["x-forwarded-prefix"] == f"/api/v1/http/{running.pk}"


async def test_missing_trailing_slash_redirects(running, alice, closing_clients):
    reply = await api(f"/api/v1/http/{running.pk}", authorization=bearer(alice))
    assert reply.status == 303
    assert reply.header("location") == f"/api/v1/http/{running.pk}/"

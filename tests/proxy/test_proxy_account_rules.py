"""Account rules the session proxy and /ws/portal/ enforce whatever the credential:

* viewer tokens and cookies do not outlive a sign-out (portal or API) or a password change
  (the credentials epoch, ``streamspace.accounts.credentials``);
* a user who must enrol in two-factor authentication first gets nothing from the proxy and no
  portal socket (``STREAMSPACE_MFA_REQUIRED``), like the portal's pages and the API.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from sessions_app import proxy
from sessions_app.proxy import auth, upstream
from streamspace.accounts.models import User
from streamspace.asgi import application
from tests.proxy.conftest import bearer, make_session, session_host
from tests.support.asgi import asgi_http
from tests.support.clients import client_for

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _fresh_cache(settings):
    settings.STREAMSPACE_PROXY_AUTH_CACHE_S = 0
    auth.clear_cache()
    yield
    auth.clear_cache()


@pytest.fixture
async def running(alice, template, docker_agent, upstream_port):
    session = await sync_to_async(make_session)(alice, template, docker_agent, endpoint=f"127.0.0.1:{upstream_port}")
    yield session
    await upstream.close_clients()


async def get(url: str, *, cookie: str | None = None, authorization: str | None = None):
    """A GET of ``url``: an absolute URL (a session's origin) or a path on the portal's origin."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = [("cookie", cookie)] if cookie else []
    if authorization:
        headers.append(("authorization", authorization))
    return await asgi_http(proxy.http_app, "GET", target, headers=headers, host=parts.netloc or "testserver")


def small_of(session) -> str:
    """A page of the session on its own origin."""
    return f"http://{session_host(session)}/small"


@sync_to_async
def viewer_path(user: User, session) -> str:
    """The viewer URL the API hands out now (JWT-authenticated, as the portal's page asks for it)."""
    response = client_for(User.objects.get(pk=user.pk)).get(f"/api/v1/sessions/{session.pk}/viewer-url")
    assert response.status_code == 200, response.content
    return response.json()["url"]


async def open_viewer(user: User, session) -> tuple[str, str]:
    """Exchange a fresh viewer URL for the viewer cookie; returns (token URL, cookie)."""
    url = await viewer_path(user, session)
    reply = await get(url)
    assert reply.status == 303, reply.body
    return url, reply.header("set-cookie").split(";")[0]


@sync_to_async
def portal_logout(user: User) -> None:
    client = Client()
    client.force_login(user)
    response = client.post("/accounts/logout/")
    assert response.status_code == 302


@sync_to_async
def api_logout(user: User) -> None:
    login = APIClient().post(
        "/api/v1/auth/login", {"username": user.username, "password": f"pw-{user.username}"}, format="json"
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {login.json()['access']}")
    assert client.post("/api/v1/auth/logout", {"refresh": login.json()["refresh"]}, format="json").status_code == 204


@sync_to_async
def change_password(user: User) -> None:
    client = Client()
    client.force_login(user)
    response = client.post(
        "/accounts/password/change/",
        {"oldpassword": f"pw-{user.username}", "password1": "Another-pass-77", "password2": "Another-pass-77"},
    )
    assert response.status_code == 302


@pytest.mark.parametrize("revoke", [portal_logout, api_logout, change_password], ids=lambda f: f.__name__)
async def test_viewer_credentials_end_with_the_sign_out_or_password_change(running, alice, revoke):
    token_url, cookie = await open_viewer(alice, running)
    small = small_of(running)
    assert (await get(small, cookie=cookie)).status == 200

    await revoke(alice)

    refused = await get(small, cookie=cookie)
    assert refused.status == 401 and json.loads(refused.body)["code"] == "not_authenticated"
    replay = await get(token_url)  # the token handed out before, still within its lifetime
    assert replay.status == 401 and replay.header("set-cookie") is None
    # a viewer URL issued after it works again
    _, fresh = await open_viewer(alice, running)
    assert (await get(small, cookie=fresh)).status == 200


async def test_another_users_sign_out_revokes_nothing_of_alice(running, alice, bob):
    _, cookie = await open_viewer(alice, running)
    await portal_logout(bob)
    assert (await get(small_of(running), cookie=cookie)).status == 200


async def test_a_stale_copy_of_the_user_cannot_restore_an_old_epoch(running, alice):
    _, cookie = await open_viewer(alice, running)
    stale = await sync_to_async(User.objects.get)(pk=alice.pk)
    await portal_logout(alice)
    stale.first_name = "Alice"
    await sync_to_async(stale.save)()  # loaded before the sign-out
    assert (await get(small_of(running), cookie=cookie)).status == 401


@sync_to_async
def session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def test_mfa_enrolment_required_means_no_proxy_access(running, alice, settings):
    token_url, viewer_cookie = await open_viewer(alice, running)
    jwt = bearer(alice)
    on_origin, on_prefix = small_of(running), f"/api/v1/http/{running.pk}/small"

    settings.STREAMSPACE_MFA_REQUIRED = "all"  # alice has a password and no authenticator yet
    for url, cookie, authorization in (
        (on_origin, viewer_cookie, None),
        (on_prefix, None, jwt),
        (token_url, None, None),
    ):
        refused = await get(url, cookie=cookie, authorization=authorization)
        assert refused.status == 403 and json.loads(refused.body)["code"] == "mfa_enrollment_required"
        assert refused.header("set-cookie") is None

    await sync_to_async(TOTPDevice.objects.create)(user=alice, name="phone", confirmed=True)
    assert (await get(on_origin, cookie=viewer_cookie)).status == 200
    assert (await get(on_prefix, authorization=jwt)).status == 200
    assert (await get(token_url)).status == 303


async def test_mfa_enrolment_required_means_no_portal_socket(alice, settings):
    cookie = (await session_cookie(alice)).encode()
    settings.STREAMSPACE_MFA_REQUIRED = "all"
    comm = WebsocketCommunicator(
        application, "/ws/portal/", headers=[(b"origin", b"http://testserver"), (b"cookie", cookie)]
    )
    connected, code = await comm.connect(timeout=5)
    assert not connected and code == 4403

    await sync_to_async(TOTPDevice.objects.create)(user=alice, name="phone", confirmed=True)
    comm = WebsocketCommunicator(
        application, "/ws/portal/", headers=[(b"origin", b"http://testserver"), (b"cookie", cookie)]
    )
    connected, _ = await comm.connect(timeout=5)
    assert connected
    await comm.disconnect()

"""The session's stream credentials on the way upstream (``sessions_app/proxy/stream_auth.py``).

The proxy presents ``Authorization: Basic streamspace:<stream secret>`` to a session whose
template takes stream secrets, on every HTTP request and WebSocket handshake, through the
ASGI path and through the front's WebSocket pipe; the browser's own ``Authorization`` never
reaches the session. Against a real selkies with basic auth on, what the proxy presents gets
in and a request straight to the server without it is refused.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from sessions_app import proxy
from sessions_app.proxy import auth, upstream
from sessions_app.proxy.rewrite import request_headers
from sessions_app.proxy.stream_auth import basic_credentials, upstream_authorization
from tests.proxy.conftest import bearer, make_session, session_host, ws_url
from tests.support import ROOT
from tests.support.asgi import asgi_http
from tests.support.ports import free_port
from tests.support.processes import stop
from tests.support.waits import wait_until

pytestmark = [pytest.mark.django_db(transaction=True)]

FULL, VIEW = "full-" + "a" * 40, "view-" + "b" * 40


def basic(secret: str) -> str:
    return "Basic " + base64.b64encode(f"streamspace:{secret}".encode()).decode()


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.STREAMSPACE_PROXY_AUTH_CACHE_S = 0
    auth.clear_cache()
    yield
    auth.clear_cache()


@pytest.fixture
async def closing_clients():
    yield
    await upstream.close_clients()


@pytest.fixture
def secured(alice, template, docker_agent, upstream_port):
    """A running session whose template takes stream secrets."""
    return make_session(
        alice,
        template,
        docker_agent,
        endpoint=f"127.0.0.1:{upstream_port}",
        stream_secret=FULL,
        stream_view_secret=VIEW,
    )


def authorizations(headers: list[list[str]]) -> list[str]:
    return [value for name, value in headers if name.lower() == "authorization"]


# --- the one function ---------------------------------------------------------------------
class _Secrets:
    def __init__(self, full: str, view: str) -> None:
        self.stream_secret, self.stream_view_secret = full, view


def test_upstream_authorization_is_basic_auth_with_the_right_secret():
    session = _Secrets(FULL, VIEW)
    assert upstream_authorization(session, view_only=False) == basic(FULL)
    assert upstream_authorization(session, view_only=True) == basic(VIEW)
    assert basic_credentials("x") == basic("x")


def test_no_secret_means_no_header_and_a_viewer_never_gets_the_full_secret():
    assert upstream_authorization(_Secrets("", ""), view_only=False) is None
    assert upstream_authorization(_Secrets("", ""), view_only=True) is None
    assert upstream_authorization(_Secrets(FULL, ""), view_only=True) is None


@pytest.mark.parametrize("websocket", [False, True])
def test_request_headers_replace_the_browsers_authorization(websocket):
    browser = [(b"authorization", b"Bearer portal-jwt"), (b"Authorization", b"Basic bWU6bWluZQ=="), (b"x-a", b"1")]
    ours = basic(FULL).encode()
    out, _ = request_headers(
        browser, client_ip="1.2.3.4", scheme="http", prefix="", websocket=websocket, authorization=ours
    )
    assert [v for k, v in out if k == b"authorization"] == [ours]
    out, _ = request_headers(browser, client_ip="1.2.3.4", scheme="http", prefix="", websocket=websocket)
    assert [v for k, v in out if k == b"authorization"] == []


# --- the ASGI path ------------------------------------------------------------------------
async def test_http_upstream_sees_the_session_credentials_not_the_browsers(secured, alice, closing_clients):
    cookie = f"{auth.VIEWER_COOKIE}={auth.make_viewer_cookie(secured.pk, alice.pk)}"
    on_origin = await asgi_http(
        proxy.http_app,
        "GET",
        "/echo",
        host=session_host(secured),
        headers=[("cookie", cookie), ("authorization", "Basic " + base64.b64encode(b"streamspace:guess").decode())],
    )
    assert on_origin.status == 200
    assert authorizations(json.loads(on_origin.body)["headers"]) == [basic(FULL)]
    on_prefix = await asgi_http(
        proxy.http_app, "POST", f"/api/v1/http/{secured.pk}/echo", headers=[("authorization", bearer(alice))]
    )
    assert on_prefix.status == 200
    assert authorizations(json.loads(on_prefix.body)["headers"]) == [basic(FULL)]


async def test_a_session_without_secrets_gets_no_authorization(
    alice, template, docker_agent, upstream_port, closing_clients
):
    plain = await sync_to_async(make_session)(alice, template, docker_agent, endpoint=f"127.0.0.1:{upstream_port}")
    reply = await asgi_http(
        proxy.http_app, "GET", f"/api/v1/http/{plain.pk}/echo", headers=[("authorization", bearer(alice))]
    )
    assert reply.status == 200
    assert authorizations(json.loads(reply.body)["headers"]) == []


async def test_websocket_handshake_carries_the_session_credentials(secured, alice):
    cookie = f"{auth.VIEWER_COOKIE}={auth.make_viewer_cookie(secured.pk, alice.pk)}".encode()
    headers = [(b"host", session_host(secured).encode()), (b"cookie", cookie), (b"authorization", b"Bearer nope")]
    ws = WebsocketCommunicator(proxy.websocket_app, "/ws", headers=headers)
    connected, _ = await ws.connect(timeout=5)
    assert connected
    await ws.send_to(text_data="!headers")
    seen = json.loads(await ws.receive_from(timeout=5))
    assert authorizations(seen) == [basic(FULL)]
    await ws.disconnect()


def test_a_viewer_decision_carries_the_full_secret_for_the_owner(secured, alice):
    decision = auth._load(secured.pk, alice.pk)
    assert decision.status == 200
    assert decision.target.upstream_authorization == basic(FULL).encode()


# --- the front's pipe (a real serve process) ----------------------------------------------
@pytest.mark.slow
@pytest.mark.postgres
def test_the_fronts_piped_handshake_carries_the_session_credentials(daphne, secured, alice):
    with ws_connect(
        ws_url(daphne, secured), additional_headers={"Authorization": bearer(alice)}, open_timeout=10
    ) as ws:
        assert "aiohttp" in ws.response.headers["Server"]  # the session's own 101: piped by the front
        ws.send("!headers")
        seen = json.loads(ws.recv(timeout=5))
    assert authorizations(seen) == [basic(FULL)]
    reply = httpx.get(
        f"http://127.0.0.1:{daphne.port}/api/v1/http/{secured.pk}/echo", headers={"Authorization": bearer(alice)}
    )
    assert authorizations(reply.json()["headers"]) == [basic(FULL)]


# --- a real selkies with basic auth -------------------------------------------------------
@pytest.fixture(scope="module")
def selkies_port(tmp_path_factory):
    """selkies (the venv's) with basic auth on, as a session's desktop runs it: user
    ``streamspace``, the stream secret and the view secret as its two passwords."""
    port = free_port()
    home = tmp_path_factory.mktemp("selkies-home")
    command = [
        str(ROOT / ".venv/bin/selkies") if (ROOT / ".venv/bin/selkies").exists() else sys.executable,
        *([] if (ROOT / ".venv/bin/selkies").exists() else ["-m", "selkies"]),
        "--addr",
        "127.0.0.1",
        "--port",
        str(port),
        "--enable-basic-auth=true",
        "--basic-auth-user=streamspace",
        f"--basic-auth-password={FULL}",
        f"--basic-auth-viewonly-password={VIEW}",
    ]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home)}
    process = subprocess.Popen(command, cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers() -> bool:
        assert process.poll() is None, "selkies exited"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code > 0
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, timeout=60, interval=0.2, what="selkies to answer")
        yield port
    finally:
        stop(process)


@pytest.mark.slow
async def test_real_selkies_takes_the_proxys_credentials_and_refuses_everything_else(
    selkies_port, alice, template, docker_agent, closing_clients
):
    base = f"http://127.0.0.1:{selkies_port}"
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(base + "/")).status_code == 401
        wrong = basic(secrets.token_urlsafe(32))
        assert (await client.get(base + "/", headers={"Authorization": wrong})).status_code == 401
        viewer = upstream_authorization(_Secrets(FULL, VIEW), view_only=True)
        assert (await client.get(base + "/", headers={"Authorization": viewer})).status_code == 200

    session = await sync_to_async(make_session)(
        alice, template, docker_agent, endpoint=f"127.0.0.1:{selkies_port}", stream_secret=FULL, stream_view_secret=VIEW
    )
    reply = await asgi_http(
        proxy.http_app, "GET", f"/api/v1/http/{session.pk}/", headers=[("authorization", bearer(alice))]
    )
    assert reply.status == 200 and b"<html" in reply.body.lower()

    without = await sync_to_async(make_session)(alice, template, docker_agent, endpoint=f"127.0.0.1:{selkies_port}")
    reply = await asgi_http(
        proxy.http_app, "GET", f"/api/v1/http/{without.pk}/", headers=[("authorization", bearer(alice))]
    )
    assert reply.status == 401  # selkies's own refusal, passed on: the header is what lets the proxy in


@pytest.mark.slow
async def test_real_selkies_websocket_opens_only_with_the_credentials(selkies_port, alice, template, docker_agent):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{selkies_port}/api/websockets", open_timeout=5):
            pass
    assert refused.value.response.status_code == 401

    session = await sync_to_async(make_session)(
        alice, template, docker_agent, endpoint=f"127.0.0.1:{selkies_port}", stream_secret=FULL, stream_view_secret=VIEW
    )
    cookie = f"{auth.VIEWER_COOKIE}={auth.make_viewer_cookie(session.pk, alice.pk)}".encode()
    ws = WebsocketCommunicator(
        proxy.websocket_app, "/api/websockets", headers=[(b"host", session_host(session).encode()), (b"cookie", cookie)]
    )
    connected, _ = await ws.connect(timeout=10)
    assert connected
    await ws.disconnect()

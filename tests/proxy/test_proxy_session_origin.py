"""The browser's way in, end to end over a real daphne process: the session's own origin.

The viewer URL the API hands out points at ``http://<id>.localhost:<port>/``; its token is
exchanged there for a host-only cookie; pages, redirects, cookies and WebSockets of the
session live at ``/`` of that origin; every path on it is the session's (the portal's own
paths included, whether daphne or the proxy's front reads the request). Clients here dial
127.0.0.1 and name the session's host in ``Host``, as a browser resolving ``*.localhost`` does.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import pytest
from django.test import Client
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.proxy.conftest import assert_echoes_text_and_binary, bearer, cookie_header, session_host

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def on_session_origin(daphne, session, **headers: str) -> httpx.Client:
    """A browser on the session's origin (127.0.0.1 dialled, the session's host named)."""
    return httpx.Client(
        base_url=daphne.base, headers={"Host": session_host(session, daphne.port), **headers}, timeout=30
    )


def session_socket(daphne, session, path: str = "/ws", **headers: str):
    """A WebSocket to the session's origin: the URI names its host, the socket dials 127.0.0.1."""
    sock = socket.create_connection(("127.0.0.1", daphne.port))
    uri = f"ws://{session_host(session, daphne.port)}{path}"
    return ws_connect(uri, sock=sock, additional_headers=headers, open_timeout=10)


def test_the_viewer_url_opens_the_session_on_its_own_origin(daphne, session, alice):
    api = httpx.get(
        f"{daphne.base}/api/v1/sessions/{session.pk}/viewer-url",
        headers={"Authorization": bearer(alice), "Host": f"localhost:{daphne.port}"},
    )
    assert api.status_code == 200, api.text
    url = urlsplit(api.json()["url"])
    assert (url.scheme, url.netloc, url.path) == ("http", session_host(session, daphne.port), "/")
    with on_session_origin(daphne, session) as browser:
        landing = browser.get(f"/?{url.query}")
        assert landing.status_code == 303 and landing.headers["location"] == "/"
        cookie = landing.headers["set-cookie"]
        assert "Path=/;" in cookie and "HttpOnly" in cookie and "domain=" not in cookie.lower()
        assert landing.headers["content-security-policy"] == f"frame-ancestors http://localhost:{daphne.port}"
        page = browser.get("/")  # the cookie alone now opens the app
        assert page.status_code == 200 and b"session page" in page.content
        assert page.headers["content-security-policy"] == f"frame-ancestors http://localhost:{daphne.port}"
        assert browser.get("/redirect").headers["location"] == "/target?x=1"
        cookies = browser.get("/cookies").headers.get_list("set-cookie")
        assert "app=1; Path=/; HttpOnly" in cookies
        assert not any(c.startswith(("sessionid=", "streamspace_viewer=")) for c in cookies)


def test_every_path_of_the_origin_is_the_sessions(daphne, session, alice):
    """daphne's path and the proxy's front (which reads ``/api/v1/http/`` requests itself) agree."""
    with on_session_origin(daphne, session, Cookie=cookie_header(session, alice)) as browser:
        for path in ("/api/v1/users", "/accounts/login/", f"/api/v1/http/{session.pk}/small", "/echo/api/v1/tokens"):
            reply = browser.get(path)
            assert "aiohttp" in reply.headers.get("server", ""), path  # the session answered, not the portal
        assert browser.get("/echo/api/v1/tokens").json()["path"] == "/echo/api/v1/tokens"
    with on_session_origin(daphne, session) as anonymous:
        reply = anonymous.get("/api/v1/users")
        assert reply.status_code == 401 and reply.headers["content-security-policy"] == "frame-ancestors 'none'"


def test_websockets_on_the_session_origin(daphne, session, alice):
    own = f"http://{session_host(session, daphne.port)}"
    with session_socket(daphne, session, Cookie=cookie_header(session, alice), Origin=own) as ws:
        assert_echoes_text_and_binary(ws)
    refusals = {
        "anonymous": {"Origin": own},
        "the portal's page": {"Cookie": cookie_header(session, alice), "Origin": f"http://localhost:{daphne.port}"},
        "a bearer": {"Authorization": bearer(alice), "Origin": own},
    }
    for name, headers in refusals.items():
        with pytest.raises(InvalidStatus) as refused:
            session_socket(daphne, session, **headers)
        assert refused.value.response.status_code == 403, name


def test_the_portal_socket_refuses_a_session_origin(daphne, alice):
    client = Client()
    client.force_login(alice)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    uri = f"ws://127.0.0.1:{daphne.port}/ws/portal/"
    with ws_connect(uri, additional_headers={"Cookie": cookie, "Origin": daphne.base}, open_timeout=10):
        pass  # the portal's own page
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(
            uri,
            additional_headers={"Cookie": cookie, "Origin": "http://0b5a1c3e-7f00-4d6a-9e55-2f1d0c8b9a77.localhost"},
        )
    assert refused.value.response.status_code == 403

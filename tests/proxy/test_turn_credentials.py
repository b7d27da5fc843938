"""TURN credentials for a session's viewers (docs/architecture.md §24): the TURN REST API
scheme, the API endpoint and the proxy's answer to the Selkies client's ``/api/turn``.

Whether a TURN server accepts them is tests/proxy/test_turn_coturn.py (a real coturn).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import json

import pytest
from django.core.management import call_command

import streamspace.settings as settings_module
from sessions_app import proxy, turn
from sessions_app.models import SessionState
from sessions_app.proxy import auth
from streamspace.accounts.tokens import create_token
from streamspace.env import ConfigError
from tests.proxy.conftest import make_session, session_host
from tests.support.asgi import asgi_http

pytestmark = [pytest.mark.django_db(transaction=True)]

SECRET = "north-star"


@pytest.fixture
def turn_on(settings):
    settings.STREAMSPACE_TURN_URLS = ["stun:turn.example.com:3478", "turn:turn.example.com:3478?transport=udp"]
    settings.STREAMSPACE_TURN_SECRET = SECRET
    settings.STREAMSPACE_TURN_TTL_S = 600
    settings.STREAMSPACE_PROXY_AUTH_CACHE_S = 0
    auth.clear_cache()
    return settings


@pytest.fixture
def session(alice, template, docker_agent, upstream_port):
    return make_session(alice, template, docker_agent, endpoint=f"127.0.0.1:{upstream_port}")


def test_the_credential_is_the_turn_rest_api_hmac(turn_on):
    config = turn.ice_servers(7, now=1_000_000)
    stun, relay = config["iceServers"]
    assert stun == {"urls": ["stun:turn.example.com:3478"]}  # STUN takes no credential
    assert relay["urls"] == ["turn:turn.example.com:3478?transport=udp"]
    assert relay["username"] == "1000600:7"  # "<expiry unix seconds>:<user id>"
    expected = base64.b64encode(hmac.new(SECRET.encode(), b"1000600:7", hashlib.sha1).digest()).decode()
    assert relay["credential"] == expected
    assert config["lifetimeDuration"] == "600s" and config["expires_at"] == 1_000_600


def test_no_turn_server_means_no_ice_servers(settings):
    settings.STREAMSPACE_TURN_URLS, settings.STREAMSPACE_TURN_SECRET = [], ""
    assert not turn.configured()
    assert turn.ice_servers(7)["iceServers"] == []


@pytest.mark.parametrize(
    ("urls", "secret", "complaint"),
    [
        ("http://turn.example.com", "s", "is not a turn:, turns:, stun: or stuns: URL"),
        ("turn:turn.example.com", "", "STREAMSPACE_TURN_SECRET must be set too"),
    ],
)
def test_bad_turn_settings_fail_at_start_up(monkeypatch, urls, secret, complaint):
    # The settings module re-read under a changed environment, then as it was.
    monkeypatch.setenv("STREAMSPACE_TURN_URLS", urls)
    monkeypatch.setenv("STREAMSPACE_TURN_SECRET", secret)
    with pytest.raises(ConfigError, match=complaint):
        importlib.reload(settings_module)
    monkeypatch.undo()
    importlib.reload(settings_module)


def test_the_api_hands_each_viewer_their_own_credentials(turn_on, session, alice_client, alice, bob_client):
    reply = alice_client.get(f"/api/v1/sessions/{session.pk}/turn")
    assert reply.status_code == 200 and reply["Cache-Control"] == "no-store"
    relay = reply.json()["iceServers"][1]
    assert relay["username"].endswith(f":{alice.pk}")
    assert relay["credential"] == turn.credential(SECRET, relay["username"])
    # Someone who may not view the session cannot learn it exists.
    assert bob_client.get(f"/api/v1/sessions/{session.pk}/turn").status_code == 404


def test_the_api_refuses_stopped_sessions_and_read_tokens(turn_on, session, alice, alice_client, client):
    session.state = SessionState.STOPPED
    session.save(update_fields=["state"])
    stopped = alice_client.get(f"/api/v1/sessions/{session.pk}/turn")
    assert stopped.status_code == 409 and stopped.json()["code"] == "session_not_viewable"
    _token, key = create_token(alice, name="ro", scope="read")
    read = client.get(f"/api/v1/sessions/{session.pk}/turn", HTTP_AUTHORIZATION=f"Token {key}")
    assert read.status_code == 403 and "iceServers" not in read.json()
    assert client.get(f"/api/v1/sessions/{session.pk}/turn").status_code == 401


def test_the_api_without_a_turn_server_answers_no_ice_servers(settings, session, alice_client):
    settings.STREAMSPACE_TURN_URLS, settings.STREAMSPACE_TURN_SECRET = [], ""
    assert alice_client.get(f"/api/v1/sessions/{session.pk}/turn").json()["iceServers"] == []


def cookie(session, user) -> str:
    return f"{auth.VIEWER_COOKIE}={auth.make_viewer_cookie(session.pk, user.pk)}"


async def selkies_turn(session, user):
    """The Selkies client's ``GET /api/turn`` on the session's origin, as ``user``'s browser."""
    headers = [("cookie", cookie(session, user))]
    return await asgi_http(proxy.http_app, "GET", "/api/turn", headers=headers, host=session_host(session))


async def test_the_proxy_answers_the_selkies_client_with_the_viewers_credentials(turn_on, session, alice, bob):
    reply = await selkies_turn(session, alice)
    assert reply.status == 200 and reply.header("content-type") == "application/json"
    assert reply.header("cache-control") == "no-store"
    relay = json.loads(reply.body)["iceServers"][1]
    assert relay["username"].endswith(f":{alice.pk}")
    assert relay["credential"] == turn.credential(SECRET, relay["username"])
    refused = await selkies_turn(session, bob)  # not bob's to view: no credentials either
    assert refused.status == 403 and b"iceServers" not in refused.body


async def test_without_a_turn_server_the_selkies_server_answers(settings, session, alice):
    settings.STREAMSPACE_TURN_URLS, settings.STREAMSPACE_TURN_SECRET = [], ""
    settings.STREAMSPACE_PROXY_AUTH_CACHE_S = 0
    auth.clear_cache()
    reply = await selkies_turn(session, alice)
    assert reply.status == 200 and json.loads(reply.body) == {"iceServers": [], "from": "upstream"}


def test_the_turn_route_is_documented_in_the_schema(client):
    call_command("check")
    assert "/api/v1/sessions/{session_id}/turn" in client.get("/api/schema/?format=json").json()["paths"]

"""A viewer URL lets its bearer act inside the session, so a read-scoped API token gets none."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from sessions_app.models import SessionState
from sessions_app.state import transition
from sessions_app.viewer import read_viewer_token
from streamspace.accounts.tokens import create_token
from tests.identity.test_tokens_and_jwt import token_client
from tests.support.clients import client_for, launch

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(alice_client, template, docker_agent):
    from sessions_app.models import Session

    session = Session.objects.get(pk=launch(alice_client).json()["id"])
    transition(session, SessionState.RUNNING, streaming_ready=True)
    return session


def test_read_token_gets_no_viewer_url(running, alice):
    _, key = create_token(alice, name="reader", scope="read")
    response = token_client(key).get(f"/api/v1/sessions/{running.pk}/viewer-url")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert "write scope" in response.json()["detail"]
    assert "url" not in response.json()
    # the read token still reads the session itself
    assert token_client(key).get(f"/api/v1/sessions/{running.pk}").status_code == 200


@pytest.mark.parametrize("scope", ["write", "admin"])
def test_write_and_admin_tokens_get_a_viewer_url(running, alice, admin_user, scope):
    user = alice if scope == "write" else admin_user
    _, key = create_token(user, name="writer", scope=scope)
    response = token_client(key).get(f"/api/v1/sessions/{running.pk}/viewer-url")
    assert response.status_code == 200, response.content
    token = parse_qs(urlsplit(response.json()["url"]).query)["token"][0]
    assert read_viewer_token(token) == {"s": str(running.pk), "u": user.pk, "e": user.credentials_epoch}


def test_jwt_and_portal_cookie_get_a_viewer_url(running, alice, client):
    assert client_for(alice).get(f"/api/v1/sessions/{running.pk}/viewer-url").status_code == 200
    client.force_login(alice)
    assert client.get(f"/api/v1/sessions/{running.pk}/viewer-url").status_code == 200

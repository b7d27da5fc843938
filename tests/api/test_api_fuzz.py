"""Garbage in, 4xx out: schemathesis against /api/schema/ plus hand-written hostile bodies."""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.support.api_matrix import ENDPOINTS
from tests.support.clients import client_for
from tests.support.factories import make_session, make_user

pytestmark = pytest.mark.django_db

wsgi_app = get_wsgi_application()
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)


@pytest.fixture(autouse=True)
def _keep_test_connection():
    """A raw WSGI call closes the DB connection at request end (CONN_MAX_AGE=0), which would
    break the test's transaction; Django's own test client disconnects the same handler."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def admin_headers(db, template, docker_agent):
    from rest_framework_simplejwt.tokens import RefreshToken

    user = make_user("fuzz-admin", "admin")
    return {"Authorization": f"Bearer {RefreshToken.for_user(user).access_token}"}


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_schema_fuzz_never_500(case, admin_headers):
    """Every operation, with schema-shaped and schema-breaking inputs, answers below 500."""
    response = case.call(app=wsgi_app, headers=admin_headers)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400 and response.headers.get("Content-Type", "").startswith("application/json"):
        body = response.json()
        assert "code" in body and "detail" in body, body


BAD_BODIES = [
    b"{not json",
    b"[]",
    b'"a string"',
    b"null",
    b"12",
    json.dumps({"template": ["list"], "resources": "x", "persistent_home": "maybe"}).encode(),
    json.dumps({"template": "x" * 100_000}).encode(),
    json.dumps({"template": "xfce", "resources": {"cpu_millicores": 10**30, "memory_mb": -5}}).encode(),
    json.dumps({"template": "xfce", "idle_timeout_s": "1e999"}).encode(),
    json.dumps(
        {
            "username": {"$ne": 1},
            "password": None,
            "max_sessions": "lots",
            "agent_id": "../../x",
            "platform": "mainframe",
            "slug": "Not A Slug!",
            "refresh": 5,
        }
    ).encode(),
    "\ud800".encode("utf-8", "surrogatepass"),
]


@pytest.mark.parametrize(
    "endpoint", [e for e in ENDPOINTS if e.method in ("post", "put", "patch")], ids=lambda e: f"{e.method} {e.path}"
)
def test_garbage_bodies_get_4xx(endpoint, admin_user, alice, template, docker_agent):

    session = make_session(admin_user, template, docker_agent)
    from tests.support.plugin_factories import matrix_targets

    path = endpoint.path.format(
        session=session.pk, slug=template.slug, user=alice.pk, agent=docker_agent.agent_id, **matrix_targets()
    )
    client = client_for(admin_user)
    for body in BAD_BODIES:
        response = getattr(client, endpoint.method)(path, body, content_type="application/json")
        assert 400 <= response.status_code < 500 or (
            # lifecycle endpoints take no body: they may succeed or refuse the transition
            endpoint.path.endswith(("/hibernate", "/wake", "/heartbeat")) and response.status_code in (202, 204, 409)
        ), (body[:60], response.status_code, response.content[:300])
        if response.status_code >= 400:
            assert set(response.json()) >= {"code", "detail"}


def test_wrong_content_type_is_415(alice_client):
    response = alice_client.post("/api/v1/sessions", "template=xfce", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_unknown_session_id_forms(alice_client):
    assert alice_client.get("/api/v1/sessions/not-a-uuid").status_code == 404
    assert alice_client.get("/api/v1/sessions/00000000-0000-0000-0000-000000000000").json()["code"] == "not_found"

"""Anonymous and forbidden cases for every endpoint of the API (NetBox-style matrix)."""

from __future__ import annotations

import pytest
from django.urls import get_resolver

from tests.support.api_matrix import ADMIN, ANY, ENDPOINTS, OPERATOR, ROLE_RANK, USER
from tests.support.clients import client_for
from tests.support.factories import make_session, make_user, share

pytestmark = pytest.mark.django_db


@pytest.fixture
def targets(alice, template, docker_agent):

    session = make_session(alice, template, docker_agent)
    from streamspace.accounts.tokens import create_token
    from tests.support.plugin_factories import matrix_targets

    return {
        "session": session.pk,
        "slug": template.slug,
        "user": alice.pk,
        "agent": docker_agent.agent_id,
        "token": create_token(alice, name="matrix")[0].pk,
        "share": share(session, make_user("sharee"))[0].pk,
        **matrix_targets(),
    }


def test_every_route_is_in_the_matrix():
    listed = {e.path.split("{")[0].rstrip("/") for e in ENDPOINTS}
    routes = set()
    for pattern in get_resolver().url_patterns:
        if str(pattern.pattern) == "api/v1/":
            for sub in pattern.url_patterns:
                for route in sub.url_patterns:
                    routes.add("/api/v1/" + str(route.pattern).split("<")[0].rstrip("/"))
    assert routes <= listed | {"/api/v1/sessions", "/api/v1/templates"}, routes - listed


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.role != ANY], ids=lambda e: f"{e.method} {e.path}")
def test_anonymous_gets_401(endpoint, anon_client, targets):
    response = getattr(anon_client, endpoint.method)(endpoint.path.format(**targets), {}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] in ("not_authenticated", "authentication_failed")


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.role != ANY], ids=lambda e: f"{e.method} {e.path}")
def test_bad_bearer_token_gets_401(endpoint, targets):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not.a.jwt")
    response = getattr(client, endpoint.method)(endpoint.path.format(**targets), {}, format="json")
    assert response.status_code == 401


INSUFFICIENT = [
    (endpoint, role)
    for endpoint in ENDPOINTS
    if endpoint.role in (OPERATOR, ADMIN)
    for role in (USER, OPERATOR)
    if ROLE_RANK[role] < ROLE_RANK[endpoint.role]
]


@pytest.mark.parametrize("endpoint,role", INSUFFICIENT, ids=lambda v: getattr(v, "path", v))
def test_insufficient_role_gets_403(endpoint, role, targets):
    client = client_for(make_user(f"probe-{role}", role))
    response = getattr(client, endpoint.method)(endpoint.path.format(**targets), {}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.role != ANY], ids=lambda e: f"{e.method} {e.path}")
def test_sufficient_role_passes_auth(endpoint, targets, admin_user):
    """The least role allowed is not refused by authorisation (it may still get 4xx for the body)."""
    user = admin_user if endpoint.role == ADMIN else make_user(f"probe-{endpoint.role}", endpoint.role)
    response = getattr(client_for(user), endpoint.method)(endpoint.path.format(**targets), {}, format="json")
    assert response.status_code not in (401, 403) or response.json()["code"] == "quota_exceeded"
    assert response.status_code < 500

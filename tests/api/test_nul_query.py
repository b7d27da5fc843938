"""A NUL character in an API query string is a 400, never a database error (PostgreSQL's text
type cannot hold it)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/audit?action=%00",
        "/api/v1/audit?actor=a%00b",
        "/api/v1/templates?category=%00",
        "/api/v1/plugins?type=%00",
        "/api/v1/sessions?state=%00",
    ],
)
def test_a_nul_in_the_query_is_refused(admin_client, url):
    response = admin_client.get(url)
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_request"


def test_portal_filters_still_strip_it(admin_user, client):
    client.force_login(admin_user)
    assert client.get("/ops/audit/?action=%00").status_code == 200

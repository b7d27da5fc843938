"""Open redirects: ``?next=`` never leaves the site (Django's check, as allauth makes it)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

pytestmark = pytest.mark.django_db

OFFSITE = ["https://evil.example/x", "//evil.example/x", "/\\evil.example", "\\\\evil.example", "javascript:alert(1)"]


@pytest.mark.parametrize("target", OFFSITE)
def test_signed_in_staff_is_not_sent_offsite(admin_user, client, target):
    client.force_login(admin_user)
    response = client.get("/admin/login/", {"next": target})
    assert response.status_code == 302 and response["Location"] == "/admin/"


@pytest.mark.parametrize("target", OFFSITE)
def test_an_offsite_next_is_not_passed_on_to_the_login_page(client, target):
    response = client.get("/admin/login/", {"next": target})
    location = urlsplit(response["Location"])
    assert response.status_code == 302 and location.path == "/accounts/login/"
    assert parse_qs(location.query)["next"] == ["/admin/"]


@pytest.mark.parametrize("target", ["/admin/auth/group/", "http://testserver/admin/"])
def test_onsite_targets_are_kept(admin_user, client, target):
    client.force_login(admin_user)
    assert client.get("/admin/login/", {"next": target})["Location"] == target


@pytest.mark.parametrize("target", OFFSITE)
def test_the_login_form_refuses_offsite_next(alice, client, target):
    response = client.post("/accounts/login/?" + f"next={target}", {"login": "alice", "password": "pw-alice"})
    assert response.status_code == 302 and "evil.example" not in response["Location"]
    assert not response["Location"].startswith("javascript:")

"""Personal API tokens (scopes, expiry, revocation, hashing) and JWT refresh rotation/logout."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from streamspace.accounts.models import ApiToken
from streamspace.audit.models import AuditEvent
from tests.support.clients import client_for

pytestmark = pytest.mark.django_db


def token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def create(client: APIClient, **body) -> dict:
    response = client.post("/api/v1/tokens", {"name": "cli", **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_token_is_shown_once_and_stored_hashed(alice_client, alice):
    created = create(alice_client, scope="read", expires_in_days=30)
    key = created["token"]
    assert key.startswith("ssp_") and len(key) > 40
    row = ApiToken.objects.get(pk=created["id"])
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(ApiToken.objects.filter(pk=row.pk).values().first())
    listed = alice_client.get("/api/v1/tokens").json()["results"]
    assert [t["name"] for t in listed] == ["cli"] and "token" not in listed[0]
    assert alice_client.get(f"/api/v1/tokens/{row.pk}").json()["prefix"] == row.prefix
    assert AuditEvent.objects.filter(action="token.created", actor=alice).exists()


def test_read_scope_allows_safe_methods_only(alice_client):
    key = create(alice_client, scope="read")["token"]
    client = token_client(key)
    me = client.get("/api/v1/users/me")
    assert me.status_code == 200 and me.json()["username"] == "alice"
    response = client.post("/api/v1/sessions", {"template": "nope"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_write_scope_allows_unsafe_methods(alice_client, template):
    key = create(alice_client, scope="write")["token"]
    response = token_client(key).post("/api/v1/sessions", {"template": "does-not-exist"}, format="json")
    assert response.status_code not in (401, 403)


def test_admin_rights_need_the_admin_scope(admin_client):
    write_key = create(admin_client, name="w", scope="write")["token"]
    admin_key = create(admin_client, name="a", scope="admin")["token"]
    assert token_client(write_key).get("/api/v1/audit").status_code == 403
    assert token_client(admin_key).get("/api/v1/audit").status_code == 200


def test_plain_user_cannot_create_admin_scoped_token(alice_client):
    response = alice_client.post("/api/v1/tokens", {"name": "x", "scope": "admin"}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_scope"
    # and an admin token of a user who was later demoted carries no admin rights
    # (rights come from the role at request time, the scope only caps them)


def test_revoked_token_stops_working(alice_client, alice, django_capture_on_commit_callbacks):
    created = create(alice_client)
    client = token_client(created["token"])
    assert client.get("/api/v1/users/me").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):  # the revocation commits (cached tokens forget it then)
        assert alice_client.delete(f"/api/v1/tokens/{created['id']}").status_code == 204
    response = client.get("/api/v1/users/me")
    assert response.status_code == 401 and response.json()["code"] == "authentication_failed"
    assert alice_client.delete(f"/api/v1/tokens/{created['id']}").status_code == 404
    assert AuditEvent.objects.filter(action="token.revoked", actor=alice).count() == 1


def test_expired_token_is_refused(alice_client):
    created = create(alice_client, expires_in_days=1)
    ApiToken.objects.filter(pk=created["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert token_client(created["token"]).get("/api/v1/users/me").status_code == 401


def test_wrong_secret_with_right_prefix_is_refused(alice_client):
    key = create(alice_client)["token"]
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert token_client(forged).get("/api/v1/users/me").status_code == 401
    assert token_client("ssp_").get("/api/v1/users/me").status_code == 401
    assert token_client("garbage").get("/api/v1/users/me").status_code == 401


def test_last_use_is_recorded(alice_client):
    created = create(alice_client)
    assert ApiToken.objects.get(pk=created["id"]).last_used_at is None
    token_client(created["token"]).get("/api/v1/users/me", REMOTE_ADDR="127.0.0.9")
    row = ApiToken.objects.get(pk=created["id"])
    assert row.last_used_at is not None and row.last_used_ip == "127.0.0.9"


def test_tokens_cannot_mint_or_revoke_tokens(alice_client):
    created = create(alice_client, scope="write")
    client = token_client(created["token"])
    assert client.post("/api/v1/tokens", {"name": "more"}, format="json").json()["code"] == "token_not_allowed"
    assert client.delete(f"/api/v1/tokens/{created['id']}").status_code == 403


def test_duplicate_active_name_conflicts_and_others_tokens_are_invisible(alice_client, bob_client):
    created = create(alice_client)
    assert alice_client.post("/api/v1/tokens", {"name": "cli"}, format="json").status_code == 409
    assert bob_client.get(f"/api/v1/tokens/{created['id']}").status_code == 404
    assert bob_client.delete(f"/api/v1/tokens/{created['id']}").status_code == 404


def test_portal_token_page_shows_key_once(alice, client):
    client.force_login(alice)
    response = client.post("/accounts/security/tokens/", {"name": "laptop", "scope": "read", "expires_in_days": "30"})
    assert response.status_code == 200
    token = ApiToken.objects.get(user=alice, name="laptop")
    body = response.content.decode()
    assert "ssp_" + token.prefix + "_" in body  # the full key, once
    page = client.get("/accounts/security/tokens/").content.decode()
    assert "laptop" in page and "ssp_" + token.prefix + "_" not in page
    client.post(f"/accounts/security/tokens/{token.pk}/revoke/")
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None


# --- JWT --------------------------------------------------------------------------------


def login(client: APIClient, username: str, password: str, **headers):
    return client.post("/api/v1/auth/login", {"username": username, "password": password}, format="json", **headers)


def test_refresh_rotates_and_logout_blacklists(alice):
    client = APIClient()
    tokens = login(client, "alice", "pw-alice").json()
    first = client.post("/api/v1/auth/refresh", {"refresh": tokens["refresh"]}, format="json")
    assert first.status_code == 200 and "refresh" in first.json()
    # rotation: the old refresh token was blacklisted when it was used
    assert client.post("/api/v1/auth/refresh", {"refresh": tokens["refresh"]}, format="json").status_code == 401

    new_refresh = first.json()["refresh"]
    authed = client_for(alice)
    assert authed.post("/api/v1/auth/logout", {"refresh": new_refresh}, format="json").status_code == 204
    assert client.post("/api/v1/auth/refresh", {"refresh": new_refresh}, format="json").status_code == 401
    assert AuditEvent.objects.filter(action="user.logout", actor=alice).exists()


def test_logout_refuses_someone_elses_refresh_token(alice, bob):
    bobs = login(APIClient(), "bob", "pw-bob").json()["refresh"]
    response = client_for(alice).post("/api/v1/auth/logout", {"refresh": bobs}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_token"
    assert client_for(alice).post("/api/v1/auth/logout", {"refresh": "x.y.z"}, format="json").status_code == 400


def test_login_audits_and_emits_user_login(alice, django_capture_on_commit_callbacks):
    from streamspace import events

    seen = []
    events.subscribe(seen.append)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = login(APIClient(), "alice", "pw-alice", HTTP_USER_AGENT="pytest-agent")
    finally:
        events.unsubscribe(seen.append)
    assert response.status_code == 200
    event = AuditEvent.objects.get(action="user.login", actor=alice)
    assert event.user_agent == "pytest-agent" and event.details["method"] == "api"
    assert [e["event"] for e in seen] == ["user.login"]
    alice.refresh_from_db()
    assert alice.last_login is not None


def test_user_created_event_on_commit(db, django_capture_on_commit_callbacks):
    from streamspace import events
    from tests.support.factories import make_user

    seen = []
    events.subscribe(seen.append)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            make_user("carol")
    finally:
        events.unsubscribe(seen.append)
    assert [e["event"] for e in seen] == ["user.created"]
    assert seen[0]["data"]["username"] == "carol"

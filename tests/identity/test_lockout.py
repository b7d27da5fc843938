"""Brute force: repeated wrong passwords lock the client out, without revealing accounts."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from streamspace.audit.models import AuditEvent

pytestmark = pytest.mark.django_db

ATTEMPTS = 50


def attempt(username: str, password: str, ip: str = "127.0.0.20"):
    return APIClient().post(
        "/api/v1/auth/login", {"username": username, "password": password}, format="json", REMOTE_ADDR=ip
    )


def run_attack(username: str) -> list[tuple[int, bytes, str | None]]:
    answers = []
    for i in range(ATTEMPTS):
        response = attempt(username, f"wrong-{i}")
        answers.append((response.status_code, response.content, response.get("Retry-After")))
    return answers


def test_fifty_wrong_passwords_lock_out_and_leak_nothing(settings, alice):
    limit = settings.AXES_FAILURE_LIMIT
    existing = run_attack("alice")
    missing = run_attack("nobody-here")

    # the same answers, byte for byte, for an existing and a missing account
    assert existing == missing
    codes = [status for status, _, _ in existing]
    assert set(codes[: limit - 1]) == {401}
    assert set(codes[limit:]) == {429}
    assert b'"locked_out"' in existing[-1][1]
    assert existing[-1][2] == str(int(settings.AXES_COOLOFF_TIME.total_seconds()))

    # the right password does not get through while locked out…
    assert attempt("alice", "pw-alice").status_code == 429
    # …but the lockout is per account name and address: others are not locked out
    assert attempt("alice", "pw-alice", ip="127.0.0.21").status_code == 200
    assert AuditEvent.objects.filter(action="user.login_failed", actor_repr="alice").count() >= limit


def test_portal_form_is_locked_out_too(settings, alice, client):
    for i in range(settings.AXES_FAILURE_LIMIT):
        client.post("/accounts/login/", {"login": "alice", "password": f"bad-{i}"}, REMOTE_ADDR="127.0.0.30")
    response = client.post("/accounts/login/", {"login": "alice", "password": "pw-alice"}, REMOTE_ADDR="127.0.0.30")
    assert response.status_code == 429
    assert b"Too many sign-in attempts" in response.content
    assert "_auth_user_id" not in client.session


def test_failed_then_successful_login_resets_the_counter(settings, alice):
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        assert attempt("alice", f"bad-{i}").status_code == 401
    assert attempt("alice", "pw-alice").status_code == 200
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        assert attempt("alice", f"bad-again-{i}").status_code == 401

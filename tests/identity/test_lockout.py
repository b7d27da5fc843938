"""Brute force: repeated wrong passwords lock the client out, without revealing accounts.

Two limits: django-axes per (account name, address), and the per-account backoff that holds
whatever the address (``accounts.throttle``), which waits rather than locks for good.
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from streamspace.accounts import throttle
from streamspace.audit.models import AuditEvent

pytestmark = pytest.mark.django_db

ATTEMPTS = 50


class Clock:
    """The throttles' clock, moved by the test (axes keeps real time: its lock is 15 min)."""

    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    frozen = Clock()
    monkeypatch.setattr(throttle, "now", frozen)
    return frozen


def attempt(username: str, password: str, ip: str = "127.0.0.20", **extra):
    return APIClient().post(
        "/api/v1/auth/login", {"username": username, "password": password}, format="json", REMOTE_ADDR=ip, **extra
    )


def run_attack(username: str) -> list[tuple[int, bytes, str | None]]:
    answers = []
    for i in range(ATTEMPTS):
        response = attempt(username, f"wrong-{i}")
        answers.append((response.status_code, response.content, response.get("Retry-After")))
    return answers


def test_fifty_wrong_passwords_lock_out_and_leak_nothing(settings, alice, clock):
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

    # the right password does not get through while locked out, from this address…
    assert attempt("alice", "pw-alice").status_code == 429
    # …nor from another one while the account's backoff runs…
    elsewhere = attempt("alice", "pw-alice", ip="127.0.0.21")
    assert elsewhere.status_code == 429 and elsewhere["Retry-After"] == str(settings.LOGIN_BACKOFF_BASE_S)
    # …which ends: then only the (name, address) lock of the attacking address remains
    clock.advance(settings.LOGIN_BACKOFF_BASE_S)
    assert attempt("alice", "pw-alice", ip="127.0.0.21").status_code == 200
    assert attempt("alice", "pw-alice").status_code == 429
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


def test_rotating_addresses_do_not_escape_the_account_limit(settings, alice, clock):
    """30 wrong passwords, each from another address, then the right one: no token while throttled."""
    answers = [attempt("alice", f"wrong-{i}", ip=f"198.51.100.{i + 1}").status_code for i in range(30)]
    free = settings.LOGIN_BACKOFF_FREE_FAILURES
    assert answers[:free] == [401] * free  # each address alone is far below axes' limit
    assert set(answers[free:]) == {429}
    right = attempt("alice", "pw-alice", ip="198.51.100.200")
    assert right.status_code == 429 and "access" not in right.json()
    assert right.json()["code"] == "locked_out" and int(right["Retry-After"]) > 0
    # a wait, not a lock: once it has passed, the owner signs in from anywhere
    clock.advance(int(right["Retry-After"]))
    assert "access" in attempt("alice", "pw-alice", ip="198.51.100.201").json()


def test_the_wait_doubles_per_failure_and_refused_attempts_do_not_extend_it(settings, alice, clock):
    settings.LOGIN_BACKOFF_FREE_FAILURES = 3
    settings.LOGIN_BACKOFF_BASE_S = 2
    settings.LOGIN_BACKOFF_MAX_S = 10
    ip = iter(f"203.0.113.{n}" for n in range(1, 200))
    for i in range(3):
        assert attempt("alice", f"wrong-{i}", ip=next(ip)).status_code == 401
    waits = []
    for i in range(5):
        refused = attempt("alice", f"wrong-again-{i}", ip=next(ip))
        assert refused.status_code == 429
        waits.append(int(refused["Retry-After"]))
        clock.advance(1)
        # refused while waiting: nothing is checked, the wait does not grow
        assert int(attempt("alice", "pw-alice", ip=next(ip))["Retry-After"]) == waits[-1] - 1
        clock.advance(waits[-1] - 1)
        assert attempt("alice", f"wrong-late-{i}", ip=next(ip)).status_code == 401
    assert waits == [2, 4, 8, 10, 10]
    reasons = set(AuditEvent.objects.filter(action="user.login_failed").values_list("details__reason", flat=True))
    assert reasons == {"invalid_credentials", "backoff"}


def test_backoff_answers_the_same_for_a_missing_account(settings, db, clock):
    for name in ("alice", "nobody-here"):
        answers = [attempt(name, f"wrong-{i}", ip=f"192.0.2.{i + 1}") for i in range(12)]
        assert [a.status_code for a in answers[-2:]] == [429, 429]


def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(settings, alice):
    """With no trusted proxy, rotating X-Forwarded-For is one client: axes locks it."""
    assert settings.STREAMSPACE_TRUSTED_PROXIES == ()
    settings.LOGIN_BACKOFF_FREE_FAILURES = 10_000  # only axes' (name, address) lock can refuse here
    for i in range(settings.AXES_FAILURE_LIMIT):
        attempt("alice", f"wrong-{i}", ip="192.0.2.7", HTTP_X_FORWARDED_FOR=f"10.9.{i}.1")
    assert set(AuditEvent.objects.filter(action="user.login_failed").values_list("ip", flat=True)) == {"192.0.2.7"}
    assert attempt("alice", "pw-alice", ip="192.0.2.7", HTTP_X_FORWARDED_FOR="10.9.99.1").status_code == 429

"""TOTP with a real generator (pyotp): enrolment, login API and portal step, the time-window
edges, replay refusal, single-use recovery codes, and the STREAMSPACE_MFA_REQUIRED policy."""

from __future__ import annotations

import base64
import types

import pyotp
import pytest
from rest_framework.test import APIClient

from streamspace.audit.models import AuditEvent
from tests.support.clients import client_for
from tests.support.factories import make_user

pytestmark = pytest.mark.django_db

T0 = 1_800_000_015  # the middle of a 30 s step, so "one step earlier" is unambiguous


@pytest.fixture
def clock(monkeypatch):
    """django-otp's TOTP clock, fixed and movable (pyotp computes codes for the same instants)."""
    state = types.SimpleNamespace(now=T0)
    fake_time = types.SimpleNamespace(time=lambda: state.now)
    monkeypatch.setattr("django_otp.plugins.otp_totp.models.time", fake_time)
    return state


@pytest.fixture(autouse=True)
def _no_throttle(settings):
    # django-otp delays retries after a failure (1 s, 2 s, …); the edge tests probe failures
    # back to back, so the throttle is off here (it stays on in production).
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    settings.OTP_STATIC_THROTTLE_FACTOR = 0


def enrol(client: APIClient, clock) -> tuple[pyotp.TOTP, list[str]]:
    started = client.post("/api/v1/mfa/totp", format="json")
    assert started.status_code == 201, started.content
    assert started.json()["qr_svg"].lstrip().startswith("<?xml") or "<svg" in started.json()["qr_svg"]
    totp = pyotp.parse_uri(started.json()["otpauth_uri"])
    assert isinstance(totp, pyotp.TOTP) and totp.issuer == "StreamSpace"
    confirmed = client.post("/api/v1/mfa/totp/confirm", {"otp": totp.at(clock.now)}, format="json")
    assert confirmed.status_code == 200, confirmed.content
    return totp, confirmed.json()["recovery_codes"]


def login(username: str, password: str, otp: str | None = None):
    body = {"username": username, "password": password}
    if otp is not None:
        body["otp"] = otp
    return APIClient().post("/api/v1/auth/login", body, format="json")


def test_enrolment_needs_a_valid_code(alice_client, clock):
    uri = alice_client.post("/api/v1/mfa/totp", format="json").json()["otpauth_uri"]
    totp = pyotp.parse_uri(uri)
    wrong = alice_client.post("/api/v1/mfa/totp/confirm", {"otp": totp.at(clock.now + 300)}, format="json")
    assert wrong.status_code == 400 and wrong.json()["code"] == "mfa_invalid"
    assert alice_client.get("/api/v1/mfa").json()["enabled"] is False
    assert alice_client.post("/api/v1/mfa/totp/confirm", {"otp": totp.at(clock.now)}, format="json").status_code == 200
    status = alice_client.get("/api/v1/mfa").json()
    assert status == {"enabled": True, "required": False, "recovery_codes_left": 10}
    assert alice_client.post("/api/v1/mfa/totp", format="json").json()["code"] == "mfa_already_enabled"


def test_login_api_asks_for_the_second_factor(alice, alice_client, clock):
    totp, _ = enrol(alice_client, clock)
    clock.now += 60
    missing = login("alice", "pw-alice")
    assert missing.status_code == 401
    assert missing.json()["code"] == "mfa_required" and missing.json()["mfa_required"] is True
    wrong = login("alice", "pw-alice", "000000" if totp.at(clock.now) != "000000" else "111111")
    assert wrong.status_code == 401 and wrong.json()["code"] == "mfa_invalid"
    assert AuditEvent.objects.filter(action="user.login_failed", details__reason="mfa_invalid").exists()
    # a wrong password never reveals whether a code would be needed
    assert login("alice", "wrong", totp.at(clock.now)).json()["code"] == "invalid_credentials"
    ok = login("alice", "pw-alice", totp.at(clock.now))
    assert ok.status_code == 200 and ok.json()["user"]["username"] == "alice"
    assert AuditEvent.objects.filter(action="user.login", actor=alice, details__mfa=True).exists()


def test_time_window_edges_and_replay(alice_client, clock):
    totp, _ = enrol(alice_client, clock)  # uses the code of step s
    clock.now = T0 + 3 * 30  # step c = s + 3
    c = clock.now
    assert login("alice", "pw-alice", totp.at(c + 60)).status_code == 401  # two steps ahead
    assert login("alice", "pw-alice", totp.at(c - 60)).status_code == 401  # two steps behind
    assert login("alice", "pw-alice", totp.at(c - 30)).status_code == 200  # one step behind: accepted
    assert login("alice", "pw-alice", totp.at(c - 30)).status_code == 401  # the same code again: replay
    assert login("alice", "pw-alice", totp.at(c)).status_code == 200  # the current step, once
    assert login("alice", "pw-alice", totp.at(c)).status_code == 401
    clock.now += 30
    assert login("alice", "pw-alice", totp.at(clock.now + 30)).status_code == 200  # one step ahead (clock skew)


def test_recovery_codes_are_single_use(alice_client, clock):
    _, codes = enrol(alice_client, clock)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert login("alice", "pw-alice", codes[0]).status_code == 200
    assert login("alice", "pw-alice", codes[0]).json()["code"] == "mfa_invalid"
    assert alice_client.get("/api/v1/mfa").json()["recovery_codes_left"] == 9
    new_codes = alice_client.post("/api/v1/mfa/recovery-codes", format="json").json()["recovery_codes"]
    assert login("alice", "pw-alice", codes[1]).status_code == 401  # old codes are gone
    assert login("alice", "pw-alice", new_codes[0].upper()).status_code == 200  # case/space tolerant


def test_remove_needs_a_code(alice_client, clock):
    totp, _ = enrol(alice_client, clock)
    clock.now += 30
    assert alice_client.delete("/api/v1/mfa/totp", {"otp": "123"}, format="json").json()["code"] == "mfa_invalid"
    assert alice_client.delete("/api/v1/mfa/totp", {"otp": totp.at(clock.now)}, format="json").status_code == 204
    assert login("alice", "pw-alice").status_code == 200
    assert AuditEvent.objects.filter(action="mfa.disabled").exists()


def test_portal_login_has_a_totp_step(alice, alice_client, client, clock):
    totp, _ = enrol(alice_client, clock)
    clock.now += 30
    response = client.post("/accounts/login/", {"login": "alice", "password": "pw-alice"})
    assert response.status_code == 302 and response["Location"] == "/accounts/login/code/"
    assert "_auth_user_id" not in client.session  # not signed in before the second factor
    step = client.get("/accounts/login/code/")
    assert step.status_code == 200 and b'autocomplete="one-time-code"' in step.content
    bad = client.post("/accounts/login/code/", {"code": "12"})
    assert bad.status_code == 200 and b"not valid" in bad.content
    assert "_auth_user_id" not in client.session
    good = client.post("/accounts/login/code/", {"code": totp.at(clock.now)})
    assert good.status_code == 302
    assert client.session["_auth_user_id"] == str(alice.pk)


def test_portal_enrolment_shows_qr_and_recovery_codes(alice, client, clock):
    client.force_login(alice)
    page = client.get("/accounts/security/two-factor/setup/")
    assert page.status_code == 200 and b"<svg" in page.content and b"<label" in page.content
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.get(user=alice, confirmed=False)
    totp = pyotp.TOTP(base64.b32encode(device.bin_key).decode())
    done = client.post("/accounts/security/two-factor/setup/", {"code": totp.at(clock.now)})
    assert done.status_code == 200 and b"recovery-codes" in done.content
    assert TOTPDevice.objects.get(user=alice).confirmed


@pytest.mark.parametrize("policy", ["staff", "all"])
def test_policy_forces_enrolment(settings, policy, operator, alice, client, clock):
    settings.STREAMSPACE_MFA_REQUIRED = policy
    api = client_for(operator)
    blocked = api.get("/api/v1/sessions")
    assert blocked.status_code == 403 and blocked.json()["code"] == "mfa_enrollment_required"
    assert api.get("/api/v1/mfa").json()["required"] is True
    client.force_login(operator)
    assert client.get("/").url == "/accounts/security/two-factor/setup/"
    assert client.get("/admin/").url == "/accounts/security/two-factor/setup/"
    assert client.get("/accounts/security/two-factor/setup/").status_code == 200
    enrol(api, clock)
    assert api.get("/api/v1/sessions").status_code == 200
    # a plain user is covered only by "all"
    alice_api = client_for(alice)
    expected = 403 if policy == "all" else 200
    assert alice_api.get("/api/v1/sessions").status_code == expected


def test_policy_none_by_default(operator):
    assert client_for(operator).get("/api/v1/sessions").status_code == 200


def test_staff_policy_applies_to_new_admins_too(settings, db):
    settings.STREAMSPACE_MFA_REQUIRED = "staff"
    admin = make_user("root", "admin")
    assert client_for(admin).get("/api/v1/audit").json()["code"] == "mfa_enrollment_required"


def test_sso_only_accounts_are_not_forced_to_enrol(settings, db):
    settings.STREAMSPACE_MFA_REQUIRED = "all"
    sso_user = make_user("from-idp", "operator")
    sso_user.set_unusable_password()
    sso_user.save()
    assert client_for(sso_user).get("/api/v1/sessions").status_code == 200

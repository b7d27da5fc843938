"""OpenID Connect sign-in against a real OpenID Provider (panva/oidc-provider on loopback).

The portal runs in Django's live server; httpx plays the browser: it follows the redirects,
fills the provider's login and consent forms and lands back on the portal signed in. The
provider is found through discovery (OIDC_OP_DISCOVERY_URL) only.
"""

from __future__ import annotations

import time
from importlib import import_module
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from django.conf import settings

from streamspace.accounts.models import Role, SSOIdentity, User
from streamspace.audit.models import AuditEvent
from tests.identity.peers import follow_until, start_oidc_provider, submit
from tests.support.processes import stop

# The session engine the server runs (cached_db on the shared cache with Redis): a write
# through another engine would leave the server reading a stale copy.
SessionStore = import_module(settings.SESSION_ENGINE).SessionStore

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def oidc_provider(live_server):
    process, issuer = start_oidc_provider(f"{live_server.url}/oidc/callback/")
    yield issuer
    stop(process)


@pytest.fixture
def oidc(settings, oidc_provider):
    settings.OIDC_ENABLED = True
    settings.OIDC_OP_DISCOVERY_URL = f"{oidc_provider}/.well-known/openid-configuration"
    for name in ("AUTHORIZATION", "TOKEN", "USER", "JWKS"):
        setattr(settings, f"OIDC_OP_{name}_ENDPOINT", "")
    settings.OIDC_RP_CLIENT_ID = "streamspace"
    settings.OIDC_RP_CLIENT_SECRET = "test-secret"
    settings.OIDC_RP_SCOPES = "openid email profile groups"
    settings.OIDC_ROLE_MAP = {"streamspace-admins": "admin", "platform-ops": "operator"}
    settings.OIDC_PROVIDER_NAME = "Test IdP"
    return oidc_provider


@pytest.fixture
def browser():
    with httpx.Client(timeout=15, follow_redirects=False) as client:
        yield client


def sign_in_at_provider(browser: httpx.Client, portal: str, login: str, next_url: str = "/sessions/") -> httpx.Response:
    """Start at the portal, pass the provider's forms; return the redirect to our callback."""
    start = browser.get(f"{portal}/oidc/authenticate/?{urlencode({'next': next_url})}")
    assert start.status_code == 302
    login_page = follow_until(browser, start, f"{portal}/")
    assert login_page.status_code == 200 and 'name="login"' in login_page.text, login_page.text[:300]
    after_login = submit(browser, login_page, {"login": login, "password": "any password"})
    consent = follow_until(browser, after_login, f"{portal}/")
    if consent.status_code == 200:  # the consent prompt
        consent = follow_until(browser, submit(browser, consent, {}), f"{portal}/")
    assert consent.is_redirect and consent.headers["location"].startswith(f"{portal}/oidc/callback/")
    return consent


def signed_in_user(browser: httpx.Client) -> User | None:
    key = browser.cookies.get("sessionid")
    if not key:
        return None
    user_id = SessionStore(session_key=key).get("_auth_user_id")
    return User.objects.filter(pk=user_id).first() if user_id else None


def test_login_page_offers_the_provider(oidc, live_server, browser):
    page = browser.get(f"{live_server.url}/accounts/login/")
    assert page.status_code == 200
    assert 'href="/oidc/authenticate/' in page.text and "Sign in with Test IdP" in page.text


def test_hidden_when_not_configured(settings, live_server, browser):
    settings.OIDC_ENABLED = False
    assert browser.get(f"{live_server.url}/oidc/authenticate/").status_code == 404
    assert "/oidc/authenticate/" not in browser.get(f"{live_server.url}/accounts/login/").text


def test_authorization_code_flow_creates_user_with_mapped_groups(oidc, live_server, browser):
    callback = sign_in_at_provider(browser, live_server.url, "sso-admin")
    landed = browser.get(callback.headers["location"])
    assert landed.status_code == 302 and landed.headers["location"] == "/sessions/"

    user = signed_in_user(browser)
    assert user is not None and user.username == "sso-admin"
    assert user.email == "sso-admin@example.com" and user.first_name == "Ada"
    assert user.role == Role.ADMIN  # streamspace-admins → admin
    assert sorted(user.groups.values_list("name", flat=True)) == ["staff", "streamspace-admins"]
    assert not user.has_usable_password()
    assert SSOIdentity.objects.get(user=user).subject == "sso-admin"
    assert AuditEvent.objects.filter(action="user.login", actor=user, details__method="oidc").exists()
    assert AuditEvent.objects.filter(action="user.created", actor=user, details__via="oidc").exists()
    # the portal now serves the signed-in user
    assert browser.get(f"{live_server.url}/sessions/").status_code == 200


def test_second_login_reuses_the_account_and_resyncs_role(oidc, live_server, browser, settings):
    browser.get(sign_in_at_provider(browser, live_server.url, "sso-ops").headers["location"])
    user = signed_in_user(browser)
    assert user.role == Role.OPERATOR
    settings.OIDC_ROLE_MAP = {}  # no role mapping: the role is left as it is
    User.objects.filter(pk=user.pk).update(role=Role.USER)
    browser.cookies.clear()
    browser.get(sign_in_at_provider(browser, live_server.url, "sso-ops").headers["location"])
    assert User.objects.filter(username__startswith="sso-ops").count() == 1
    assert User.objects.get(pk=user.pk).role == Role.USER


def test_plain_member_gets_the_user_role(oidc, live_server, browser):
    browser.get(sign_in_at_provider(browser, live_server.url, "sso-alice").headers["location"])
    user = signed_in_user(browser)
    assert user.role == Role.USER and list(user.groups.values_list("name", flat=True)) == ["engineering"]


def test_wrong_state_is_refused(oidc, live_server, browser):
    callback = sign_in_at_provider(browser, live_server.url, "sso-alice")
    url = urlsplit(callback.headers["location"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    query["state"] = "forged-" + query["state"]
    refused = browser.get(f"{live_server.url}/oidc/callback/?{urlencode(query)}")
    assert refused.status_code == 302 and refused.headers["location"] == "/accounts/login/"
    assert signed_in_user(browser) is None
    assert not User.objects.filter(username="sso-alice").exists()
    assert AuditEvent.objects.filter(action="user.login_failed", details__reason="oidc_invalid_state").exists()
    # the refusal is explained on the login page
    assert "Single sign-on did not complete" in browser.get(f"{live_server.url}/accounts/login/").text


def test_wrong_nonce_is_refused(oidc, live_server, browser):
    callback = sign_in_at_provider(browser, live_server.url, "sso-alice")
    state = parse_qs(urlsplit(callback.headers["location"]).query)["state"][0]
    # The ID token carries the nonce the provider got; make our session expect another one.
    session = SessionStore(session_key=browser.cookies["sessionid"])
    states = session["oidc_states"]
    states[state]["nonce"] = "not-the-nonce-we-sent"
    session["oidc_states"] = states
    session.save()
    refused = browser.get(callback.headers["location"])
    assert refused.status_code == 302 and refused.headers["location"] == "/accounts/login/"
    assert signed_in_user(browser) is None
    assert not User.objects.filter(username="sso-alice").exists()


def test_expired_code_is_refused(oidc, live_server, browser, settings):
    settings.OIDC_RP_CLIENT_ID = "streamspace-short"  # the provider gives this client 1 s codes
    callback = sign_in_at_provider(browser, live_server.url, "sso-alice")
    time.sleep(2.5)  # let the authorization code expire at the provider
    refused = browser.get(callback.headers["location"])
    assert refused.status_code == 302 and refused.headers["location"] == "/accounts/login/"
    assert signed_in_user(browser) is None
    assert AuditEvent.objects.filter(action="user.login_failed", details__method="oidc").exists()


def test_replayed_callback_is_refused(oidc, live_server, browser):
    callback = sign_in_at_provider(browser, live_server.url, "sso-alice")
    assert browser.get(callback.headers["location"]).headers["location"] == "/sessions/"
    browser.post(f"{live_server.url}/accounts/logout/", headers={"X-CSRFToken": browser.cookies.get("csrftoken", "")})
    browser.cookies.delete("sessionid")
    replay = browser.get(callback.headers["location"])  # same code and state, new browser session
    assert replay.status_code == 302 and replay.headers["location"] == "/accounts/login/"
    assert signed_in_user(browser) is None


def junk_callback(attacker: httpx.Client, portal: str) -> httpx.Response:
    """A callback with a state of its own browser session and a made-up code."""
    start = attacker.get(f"{portal}/oidc/authenticate/")
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    return attacker.get(f"{portal}/oidc/callback/?{urlencode({'code': 'made-up', 'state': state})}")


def test_junk_callbacks_never_lock_out_a_valid_sign_in(oidc, live_server, browser, settings):
    """Refused callbacks from one address, then a valid sign-in from it: signed in."""
    with httpx.Client(timeout=15) as attacker:
        junk = [junk_callback(attacker, live_server.url) for _ in range(settings.SSO_FAILURE_LIMIT + 1)]
    # not a lock: a valid code from the same address signs in…
    landed = browser.get(sign_in_at_provider(browser, live_server.url, "sso-alice").headers["location"])
    assert landed.status_code == 302 and landed.headers["location"] == "/sessions/"
    assert signed_in_user(browser).username == "sso-alice"
    # …while the junk past the limit was answered 429: a rate limit
    refused = [(r.status_code, r.headers.get("location")) for r in junk]
    assert refused == [(302, "/accounts/login/")] * settings.SSO_FAILURE_LIMIT + [(429, None)]
    assert int(junk[-1].headers["Retry-After"]) > 0
    failures = AuditEvent.objects.filter(action="user.login_failed", details__method="oidc")
    assert failures.count() == settings.SSO_FAILURE_LIMIT + 1

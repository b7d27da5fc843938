"""SAML 2.0 sign-in against a real IdP (pysaml2's Server on loopback, xmlsec1 signatures).

httpx plays the browser through the SP-initiated flow: /saml2/login/ → the IdP's login form →
the IdP's auto-posting form → /saml2/acs/. Tampered, replayed and unsigned assertions must be
refused.
"""

from __future__ import annotations

import base64
import shutil
from importlib import import_module
from urllib.parse import urlencode

import httpx
import pytest
from django.conf import settings

from streamspace.accounts.models import Role, SSOIdentity, User
from streamspace.audit.models import AuditEvent
from tests.identity.peers import forms_in, require, submit

# The session engine the server runs (cached_db on the shared cache with Redis): a write
# through another engine would leave the server reading a stale copy.
SessionStore = import_module(settings.SESSION_ENGINE).SessionStore

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def idp(live_server, tmp_path_factory, django_db_blocker):
    require(shutil.which("xmlsec1") is not None, "xmlsec1 is not installed")
    from tests.identity.saml_idp import running_idps

    # The live server answers the IdP's metadata fetch before any test's database fixture.
    with django_db_blocker.unblock(), running_idps(live_server.url, tmp_path_factory.mktemp("saml"), ["idp"]) as peers:
        yield peers[0]


@pytest.fixture
def browser():
    with httpx.Client(timeout=15, follow_redirects=True) as client:
        yield client


def idp_answer(
    browser: httpx.Client, portal: str, username: str, *, unsigned: bool = False, sha1: bool = False, idp: str = ""
) -> httpx.Response:
    """Run the flow up to the IdP's auto-posting form (the browser would post it to our ACS)."""
    query = {"next": "/sessions/", **({"idp": idp} if idp else {})}
    login_form = browser.get(f"{portal}/saml2/login/?{urlencode(query)}")
    assert login_form.status_code == 200 and 'name="SAMLRequest"' in login_form.text, login_form.text[:300]
    if unsigned or sha1:  # ask this IdP for an assertion without signature, or signed with SHA-1
        option = "unsigned=1" if unsigned else "sha1=1"
        text = login_form.text.replace('action="/sso/login"', f'action="/sso/login?{option}"')
        login_form = httpx.Response(200, text=text, request=login_form.request)
    answer = submit(browser, login_form, {"username": username})
    assert answer.status_code == 200 and 'name="SAMLResponse"' in answer.text
    return answer


def post_to_acs(browser: httpx.Client, answer: httpx.Response, **replace: str) -> httpx.Response:
    return submit(browser, answer, replace)


def signed_in_user(browser: httpx.Client) -> User | None:
    key = browser.cookies.get("sessionid")
    user_id = SessionStore(session_key=key).get("_auth_user_id") if key else None
    return User.objects.filter(pk=user_id).first() if user_id else None


def test_metadata_at_a_stable_url(idp, live_server):
    metadata = httpx.get(f"{live_server.url}/saml2/metadata/", timeout=10)
    assert metadata.headers["content-type"].startswith("text/xml")
    assert f'entityID="{live_server.url}/saml2/metadata/"' in metadata.text
    assert f"{live_server.url}/saml2/acs/" in metadata.text
    assert 'WantAssertionsSigned="true"' in metadata.text


def test_login_page_offers_saml(idp, live_server, browser):
    page = browser.get(f"{live_server.url}/accounts/login/")
    assert 'href="/saml2/login/' in page.text and "Sign in with Test SAML" in page.text


def test_sp_initiated_login_maps_attributes_and_groups(idp, live_server, browser):
    answer = idp_answer(browser, live_server.url, "saml-bob")
    landed = post_to_acs(browser, answer)
    assert landed.status_code == 200 and str(landed.url) == f"{live_server.url}/sessions/"
    user = signed_in_user(browser)
    assert user is not None and user.username == "saml-bob"
    assert (user.email, user.first_name, user.last_name) == ("saml-bob@example.com", "Bob", "Saml")
    assert user.role == Role.OPERATOR
    assert sorted(user.groups.values_list("name", flat=True)) == ["design", "streamspace-operators"]
    identity = SSOIdentity.objects.get(user=user, provider="saml")
    assert (identity.issuer, identity.subject) == (idp.entity_id, "persistent-saml-bob")
    assert AuditEvent.objects.filter(action="user.login", actor=user, details__method="saml").exists()


def test_tampered_assertion_is_refused(idp, live_server, browser):
    answer = idp_answer(browser, live_server.url, "saml-carol")
    original = forms_in(answer.text)[0].fields["SAMLResponse"]
    xml = base64.b64decode(original).decode()
    assert "saml-carol@example.com" in xml
    tampered = base64.b64encode(xml.replace("saml-carol@example.com", "root@example.com").encode()).decode()
    refused = post_to_acs(browser, answer, SAMLResponse=tampered)
    assert refused.status_code == 403 and "Single sign-on failed" in refused.text
    assert signed_in_user(browser) is None
    assert not User.objects.filter(email="root@example.com").exists()
    assert AuditEvent.objects.filter(action="user.login_failed", details__method="saml").exists()


def test_replayed_assertion_is_refused(idp, live_server, browser):
    answer = idp_answer(browser, live_server.url, "saml-carol")
    assert post_to_acs(browser, answer).status_code == 200
    assert signed_in_user(browser).username == "saml-carol"
    # the same response again, in this session and in a fresh one
    again = post_to_acs(browser, answer)
    assert again.status_code == 403
    with httpx.Client(timeout=15, follow_redirects=True) as other:
        stolen = submit(other, answer, {})
        assert stolen.status_code == 403
        assert signed_in_user(other) is None


def test_unsigned_assertion_is_refused(idp, live_server, browser):
    answer = idp_answer(browser, live_server.url, "saml-carol", unsigned=True)
    assert "ds:Signature" not in base64.b64decode(forms_in(answer.text)[0].fields["SAMLResponse"]).decode()
    refused = post_to_acs(browser, answer)
    assert refused.status_code == 403
    assert signed_in_user(browser) is None


def assertion_xml(answer: httpx.Response) -> str:
    return base64.b64decode(forms_in(answer.text)[0].fields["SAMLResponse"]).decode()


def test_sha1_signatures_are_refused(idp, live_server, browser):
    # what the IdP sends normally: RSA-SHA256 over SHA-256 digests, accepted
    normal = assertion_xml(idp_answer(browser, live_server.url, "saml-carol"))
    assert "xmldsig-more#rsa-sha256" in normal and "xmlenc#sha256" in normal
    answer = idp_answer(browser, live_server.url, "saml-carol", sha1=True)
    xml = assertion_xml(answer)
    assert 'Algorithm="http://www.w3.org/2000/09/xmldsig#rsa-sha1"' in xml
    assert 'Algorithm="http://www.w3.org/2000/09/xmldsig#sha1"' in xml
    refused = post_to_acs(browser, answer)
    assert refused.status_code == 400 and "Single sign-on failed" in refused.text
    assert signed_in_user(browser) is None
    assert not User.objects.filter(username="saml-carol").exists()
    failure = AuditEvent.objects.get(action="user.login_failed")
    assert failure.details == {"reason": "saml:refused_algorithm_or_issuer", "method": "saml"}


def junk_post(client: httpx.Client, portal: str) -> httpx.Response:
    junk = base64.b64encode(b"<samlp:Response xmlns:samlp='urn:oasis:names:tc:SAML:2.0:protocol'/>").decode()
    return client.post(f"{portal}/saml2/acs/", data={"SAMLResponse": junk, "RelayState": "/"})


def test_junk_posts_never_lock_out_a_valid_response(idp, live_server, browser, settings):
    """Junk posts from one address (one office behind NAT), then a valid signed response."""
    answer = idp_answer(browser, live_server.url, "saml-bob")
    with httpx.Client(timeout=15) as attacker:
        junk = [junk_post(attacker, live_server.url) for _ in range(settings.SSO_FAILURE_LIMIT + 1)]
    # not a lock: the valid response from the same address signs in…
    landed = post_to_acs(browser, answer)
    assert landed.status_code == 200 and str(landed.url) == f"{live_server.url}/sessions/"
    assert signed_in_user(browser).username == "saml-bob"
    # …while the junk past the limit was answered 429: a rate limit
    assert [r.status_code for r in junk] == [403] * settings.SSO_FAILURE_LIMIT + [429]
    assert int(junk[-1].headers["Retry-After"]) > 0


def test_a_legacy_identity_is_bound_to_the_only_idp(idp, live_server, browser):
    """Identities recorded by NameID alone keep signing in, and learn their IdP."""
    carol = User.objects.create(username="carol-from-before", email="carol@example.com")
    SSOIdentity.objects.create(user=carol, provider="saml", issuer="", subject="persistent-saml-carol")
    post_to_acs(browser, idp_answer(browser, live_server.url, "saml-carol"))
    assert signed_in_user(browser) == carol
    identity = SSOIdentity.objects.get(user=carol)
    assert (identity.issuer, identity.subject) == (idp.entity_id, "persistent-saml-carol")

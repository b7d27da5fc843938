"""SAML 2.0 sign-in against a real IdP (pysaml2's Server on loopback, xmlsec1 signatures).

httpx plays the browser through the SP-initiated flow: /saml2/login/ → the IdP's login form →
the IdP's auto-posting form → /saml2/acs/. Tampered, replayed and unsigned assertions must be
refused.
"""

from __future__ import annotations

import base64
import shutil
from urllib.parse import urlencode

import httpx
import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.test import override_settings

from streamspace.accounts import conf
from streamspace.accounts.models import Role, SSOIdentity, User
from streamspace.audit.models import AuditEvent
from tests.identity.peers import forms_in, require, submit
from tests.support.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def idp(live_server, tmp_path_factory):
    require(shutil.which("xmlsec1") is not None, "xmlsec1 is not installed")
    from tests.identity.saml_idp import SamlIdP

    directory = tmp_path_factory.mktemp("saml")
    peer = SamlIdP(directory, free_port())
    sp_config = conf.saml_config(
        base_url=live_server.url,
        sp_entity_id="",
        idp_metadata_url="",
        idp_metadata_file=peer.metadata_file(),
        sp_key_file="",
        sp_cert_file="",
        xmlsec_binary=shutil.which("xmlsec1"),
        debug=False,
    )
    overrides = override_settings(
        SAML_ENABLED=True,
        SAML_CONFIG=sp_config,
        SAML_ROLE_MAP={"streamspace-operators": "operator"},
        SAML_PROVIDER_NAME="Test SAML",
    )
    overrides.enable()
    try:
        # The IdP learns about us from our metadata, fetched at its stable URL.
        metadata = httpx.get(f"{live_server.url}/saml2/metadata/", timeout=10)
        assert metadata.status_code == 200, metadata.text[:300]
        sp_metadata = directory / "sp-metadata.xml"
        sp_metadata.write_bytes(metadata.content)
        peer.start(str(sp_metadata))
        yield peer
    finally:
        peer.stop()
        overrides.disable()


@pytest.fixture
def browser():
    with httpx.Client(timeout=15, follow_redirects=True) as client:
        yield client


def idp_answer(browser: httpx.Client, portal: str, username: str, *, unsigned: bool = False) -> httpx.Response:
    """Run the flow up to the IdP's auto-posting form (the browser would post it to our ACS)."""
    login_form = browser.get(f"{portal}/saml2/login/?{urlencode({'next': '/sessions/'})}")
    assert login_form.status_code == 200 and 'name="SAMLRequest"' in login_form.text, login_form.text[:300]
    if unsigned:  # ask this IdP for an assertion without signature
        text = login_form.text.replace('action="/sso/login"', 'action="/sso/login?unsigned=1"')
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
    assert SSOIdentity.objects.get(user=user, provider="saml").subject == "persistent-saml-bob"
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

"""SAML with several IdPs in the metadata: a NameID belongs to the IdP that signed it.

Two real IdPs (pysaml2 Servers on loopback) assert the same NameID for different people;
each must land on its own account, a response may not claim another IdP as its issuer, and
identities recorded by NameID alone are bound to their IdP only when it is known.
"""

from __future__ import annotations

import base64
import shutil

import httpx
import pytest

from streamspace.accounts.models import SSOIdentity, User
from tests.identity.peers import forms_in, require, submit
from tests.identity.test_saml import idp_answer, post_to_acs, signed_in_user

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def idps(live_server, tmp_path_factory, django_db_blocker):
    require(shutil.which("xmlsec1") is not None, "xmlsec1 is not installed")
    from tests.identity.saml_idp import running_idps

    with (
        django_db_blocker.unblock(),
        running_idps(live_server.url, tmp_path_factory.mktemp("saml2idps"), ["idp-a", "idp-b"]) as peers,
    ):
        yield peers


@pytest.fixture
def browser():
    with httpx.Client(timeout=15, follow_redirects=True) as client:
        yield client


def sign_in(browser: httpx.Client, portal: str, idp, username: str) -> httpx.Response:
    return post_to_acs(browser, idp_answer(browser, portal, username, idp=idp.entity_id))


def test_the_same_name_id_from_two_idps_is_two_people(idps, live_server, browser):
    a, b = idps
    assert sign_in(browser, live_server.url, a, "saml-bob").status_code == 200
    bob_at_a = signed_in_user(browser)
    browser.cookies.clear()
    assert sign_in(browser, live_server.url, b, "saml-bob").status_code == 200
    bob_at_b = signed_in_user(browser)
    assert bob_at_a is not None and bob_at_b is not None and bob_at_a != bob_at_b
    identities = {(i.issuer, i.subject): i.user for i in SSOIdentity.objects.all()}
    assert identities == {
        (a.entity_id, "persistent-saml-bob"): bob_at_a,
        (b.entity_id, "persistent-saml-bob"): bob_at_b,
    }
    # and each IdP keeps finding its own user
    browser.cookies.clear()
    sign_in(browser, live_server.url, a, "saml-bob")
    assert signed_in_user(browser) == bob_at_a


def test_a_response_cannot_name_another_idp_as_its_issuer(idps, live_server, browser):
    """IdP B's signed assertion in a response whose (unsigned) Issuer says IdP A."""
    a, b = idps
    answer = idp_answer(browser, live_server.url, "saml-carol", idp=b.entity_id)
    xml = base64.b64decode(forms_in(answer.text)[0].fields["SAMLResponse"]).decode()
    issuer = f">{b.entity_id}</saml:Issuer>"
    assert xml.count(issuer) == 2  # the response's (first, unsigned) and the assertion's (signed)
    forged = xml.replace(issuer, f">{a.entity_id}</saml:Issuer>", 1)
    refused = submit(browser, answer, {"SAMLResponse": base64.b64encode(forged.encode()).decode()})
    assert refused.status_code == 400
    assert signed_in_user(browser) is None and not SSOIdentity.objects.exists()


def test_legacy_identities_wait_for_their_idp_to_be_named(idps, live_server, browser, settings):
    a, b = idps
    carol = User.objects.create(username="carol-from-before")
    SSOIdentity.objects.create(user=carol, provider="saml", issuer="", subject="persistent-saml-carol")
    # two IdPs and nobody said which one carol's identity came from: no sign-in, no new account
    refused = sign_in(browser, live_server.url, b, "saml-carol")
    assert refused.status_code == 403 and signed_in_user(browser) is None
    assert User.objects.count() == 1 and SSOIdentity.objects.get().issuer == ""

    settings.SAML_LEGACY_IDP_ENTITY_ID = a.entity_id
    # IdP B's carol is somebody else: a new account; the legacy identity stays unbound…
    browser.cookies.clear()
    sign_in(browser, live_server.url, b, "saml-carol")
    assert signed_in_user(browser) not in (None, carol)
    # …until IdP A's carol signs in: she is the one from before
    browser.cookies.clear()
    sign_in(browser, live_server.url, a, "saml-carol")
    assert signed_in_user(browser) == carol
    assert SSOIdentity.objects.get(user=carol).issuer == a.entity_id

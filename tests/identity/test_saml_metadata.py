"""IdP metadata is re-read after ``STREAMSPACE_SAML_METADATA_TTL_S`` (a failed refresh keeps the
last good copy), and migration 0004 binds identities recorded by NameID alone to their IdP."""

from __future__ import annotations

import importlib
import shutil

import pytest
from django.apps import apps

from streamspace.accounts import conf, saml
from streamspace.accounts.models import SSOIdentity, User
from tests.identity.peers import require


@pytest.fixture
def two_idps(tmp_path):
    require(shutil.which("xmlsec1") is not None, "xmlsec1 is not installed")
    from tests.identity.saml_idp import SamlIdP

    return SamlIdP(tmp_path, 18001, "idp-a"), SamlIdP(tmp_path, 18002, "idp-b")


def sp_config(metadata_file: str) -> dict:
    return conf.saml_config(
        base_url="http://sp.example",
        sp_entity_id="",
        idp_metadata_url="",
        idp_metadata_file=metadata_file,
        sp_key_file="",
        sp_cert_file="",
        xmlsec_binary=shutil.which("xmlsec1") or "/usr/bin/xmlsec1",
        debug=False,
    )


class Clock:
    def __init__(self) -> None:
        self.t = 5000.0

    def __call__(self) -> float:
        return self.t


def idps_now() -> list[str]:
    return sorted(saml.config_loader().metadata.identity_providers())


def test_metadata_is_read_again_after_the_ttl(two_idps, tmp_path, settings, monkeypatch):
    a, b = two_idps
    live = tmp_path / "idp-metadata-live.xml"
    shutil.copy(a.metadata_file(), live)
    settings.SAML_CONFIG = sp_config(str(live))
    settings.STREAMSPACE_SAML_METADATA_TTL_S = 3600
    clock = Clock()
    monkeypatch.setattr(saml, "_clock", clock)
    monkeypatch.setattr(saml, "_configs", {})

    assert idps_now() == [a.entity_id]
    shutil.copy(b.metadata_file(), live)  # the IdP rolled over to new metadata
    clock.t += 3599
    assert idps_now() == [a.entity_id]  # read once per TTL, not per request
    clock.t += 1
    assert idps_now() == [b.entity_id]

    # a refresh that fails keeps the last good copy, and is tried again a minute later
    live.write_text("<EntityDescriptor this is not metadata")
    clock.t += 3600
    assert idps_now() == [b.entity_id]
    shutil.copy(a.metadata_file(), live)
    clock.t += saml.METADATA_RETRY_S - 1
    assert idps_now() == [b.entity_id]
    clock.t += 1
    assert idps_now() == [a.entity_id]


@pytest.mark.django_db
def test_migration_binds_legacy_identities_when_the_idp_is_known(two_idps, settings):
    a, b = two_idps
    bind = importlib.import_module("streamspace.accounts.migrations.0004_bind_legacy_saml_identities").bind
    user = User.objects.create(username="from-before")
    legacy = SSOIdentity.objects.create(user=user, provider="saml", issuer="", subject="persistent-x")
    oidc = SSOIdentity.objects.create(user=user, provider="oidc", issuer="", subject="sub-x")

    # several IdPs and no setting: left for the sign-in rule
    config = sp_config(a.metadata_file())
    config["metadata"]["local"] = [a.metadata_file(), b.metadata_file()]
    settings.SAML_CONFIG = config
    bind(apps, None)
    legacy.refresh_from_db()
    assert legacy.issuer == ""

    # one IdP in the local metadata: that one
    settings.SAML_CONFIG = sp_config(b.metadata_file())
    bind(apps, None)
    legacy.refresh_from_db()
    oidc.refresh_from_db()
    assert (legacy.issuer, oidc.issuer) == (b.entity_id, "")

    # the explicit setting wins
    SSOIdentity.objects.filter(pk=legacy.pk).update(issuer="")
    settings.SAML_LEGACY_IDP_ENTITY_ID = a.entity_id
    bind(apps, None)
    legacy.refresh_from_db()
    assert legacy.issuer == a.entity_id

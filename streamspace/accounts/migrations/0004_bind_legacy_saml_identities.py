"""Bind SAML identities recorded by NameID alone to the IdP that issued them.

Their issuer is the one IdP this deployment trusts: ``SAML_LEGACY_IDP_ENTITY_ID`` when set,
else the only IdP in the local metadata files of ``SAML_CONFIG``. When neither answers
(metadata only at a URL, or several IdPs and no setting), the rows keep an empty issuer and
are bound at their user's next sign-in by the same rule (``accounts.saml``), so existing
users keep signing in either way. Only local files are read here: a migration does not fetch.
"""

from __future__ import annotations


from defusedxml import ElementTree
from django.conf import settings
from django.db import migrations

_MD = "{urn:oasis:names:tc:SAML:2.0:metadata}"


def _idps_in(path: str) -> set[str]:
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return set()
    entities = [root] if root.tag == f"{_MD}EntityDescriptor" else root.iter(f"{_MD}EntityDescriptor")
    return {e.get("entityID", "") for e in entities if e.find(f"{_MD}IDPSSODescriptor") is not None} - {""}


def legacy_issuer() -> str:
    explicit = getattr(settings, "SAML_LEGACY_IDP_ENTITY_ID", "")
    if explicit:
        return explicit
    metadata = (getattr(settings, "SAML_CONFIG", None) or {}).get("metadata") or {}
    if metadata.get("remote"):
        return ""
    idps = set().union(*(_idps_in(path) for path in metadata.get("local") or []))
    return idps.pop() if len(idps) == 1 else ""


def bind(apps, schema_editor) -> None:
    issuer = legacy_issuer()
    if issuer:
        apps.get_model("accounts", "SSOIdentity").objects.filter(provider="saml", issuer="").update(issuer=issuer)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0003_sso_identity_issuer")]

    operations = [migrations.RunPython(bind, migrations.RunPython.noop)]

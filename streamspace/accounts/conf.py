"""Pure helpers that turn identity-related environment variables into settings.

Imported by ``streamspace/settings.py``, so nothing here may import Django models or touch
the network: OIDC discovery happens lazily at the first login (``accounts/oidc.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streamspace.env import ConfigError

ROLE_NAMES = ("admin", "operator", "user")
MFA_POLICIES = ("none", "staff", "all")


def parse_json_map(name: str, raw: str) -> dict[str, str]:
    """Parse a JSON object of string → string (e.g. ``OIDC_ROLE_MAP``); fail loudly."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError(f"{name} must be a JSON object mapping strings to strings")
    return value


def parse_role_map(name: str, raw: str) -> dict[str, str]:
    """``{"idp-group": "admin"|"operator"|"user"}``."""
    mapping = parse_json_map(name, raw)
    bad = {role for role in mapping.values() if role not in ROLE_NAMES}
    if bad:
        raise ConfigError(f"{name} maps to unknown roles {sorted(bad)}; use {ROLE_NAMES}")
    return mapping


def parse_mfa_policy(raw: str) -> str:
    policy = (raw or "none").strip().lower()
    if policy not in MFA_POLICIES:
        raise ConfigError(f"STREAMSPACE_MFA_REQUIRED={raw!r}; use one of {MFA_POLICIES}")
    return policy


# Friendly names → the OIDs and names IdPs commonly send, for SAML_ATTRIBUTE_MAP's default.
DEFAULT_SAML_ATTRIBUTE_MAP = {
    "uid": "username",
    "urn:oid:0.9.2342.19200300.100.1.1": "username",
    "mail": "email",
    "email": "email",
    "urn:oid:0.9.2342.19200300.100.1.3": "email",
    "givenName": "first_name",
    "urn:oid:2.5.4.42": "first_name",
    "sn": "last_name",
    "urn:oid:2.5.4.4": "last_name",
    "groups": "groups",
    "memberOf": "groups",
    "isMemberOf": "groups",
    "urn:oid:1.3.6.1.4.1.5923.1.5.1.1": "groups",
    "http://schemas.xmlsoap.org/claims/Group": "groups",
}


def saml_config(
    *,
    base_url: str,
    sp_entity_id: str,
    idp_metadata_url: str,
    idp_metadata_file: str,
    sp_key_file: str,
    sp_cert_file: str,
    xmlsec_binary: str,
    debug: bool,
) -> dict[str, Any]:
    """The pysaml2 SP configuration djangosaml2 reads from ``settings.SAML_CONFIG``.

    Assertions must be signed by the IdP (``want_assertions_signed``); unsolicited
    (IdP-initiated) responses are refused so each assertion answers one request of ours.
    What we sign (AuthnRequests, with a key pair) uses RSA-SHA256; what we accept is checked
    in ``accounts.saml`` (SHA-2 only).
    """
    base = base_url.rstrip("/")
    metadata: dict[str, Any] = {}
    if idp_metadata_url:
        metadata["remote"] = [{"url": idp_metadata_url}]
    if idp_metadata_file:
        if not Path(idp_metadata_file).is_file():
            raise ConfigError(f"SAML_IDP_METADATA_FILE={idp_metadata_file!r} does not exist")
        metadata["local"] = [idp_metadata_file]
    config: dict[str, Any] = {
        "xmlsec_binary": xmlsec_binary,
        "entityid": sp_entity_id or f"{base}/saml2/metadata/",
        "allow_unknown_attributes": True,
        "service": {
            "sp": {
                "name": "StreamSpace",
                "name_id_format": "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
                "endpoints": {
                    "assertion_consumer_service": [
                        (f"{base}/saml2/acs/", "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"),
                    ],
                    "single_logout_service": [
                        (f"{base}/saml2/ls/", "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"),
                        (f"{base}/saml2/ls/post/", "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"),
                    ],
                },
                "allow_unsolicited": False,
                "authn_requests_signed": bool(sp_key_file),
                "logout_requests_signed": bool(sp_key_file),
                "want_assertions_signed": True,
                "want_response_signed": False,
                "only_use_keys_in_metadata": True,
                # pysaml2 reads these per service; its default for both is SHA-1.
                "signing_algorithm": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
                "digest_algorithm": "http://www.w3.org/2001/04/xmlenc#sha256",
            },
        },
        "metadata": metadata,
        "debug": 1 if debug else 0,
    }
    if sp_key_file and sp_cert_file:
        config["key_file"] = sp_key_file
        config["cert_file"] = sp_cert_file
        config["encryption_keypairs"] = [{"key_file": sp_key_file, "cert_file": sp_cert_file}]
    return config

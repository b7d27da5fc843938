"""SAML 2.0 sign-in through djangosaml2 (pysaml2 + xmlsec1).

The SP requires signed assertions and refuses unsolicited responses, so each assertion must
answer an AuthnRequest of this browser session (which also makes a replayed response fail:
the request it answers is forgotten after the first use). On top of pysaml2's checks, the
ACS refuses signatures and digests other than SHA-2 (:data:`SIGNATURE_ALGORITHMS`,
:data:`DIGEST_ALGORITHMS`) and a response whose Issuer is not its signed assertion's.

Users are matched by the assertion's issuer (the IdP entity whose key verified it) *and*
NameID, so with several IdPs in the metadata one IdP cannot sign in as another's user.
Attributes map to user fields through ``SAML_ATTRIBUTE_MAP`` (IdP attribute name →
``username``/``email``/``first_name``/``last_name``/``groups``) and groups to roles through
``SAML_ROLE_MAP``. The IdP metadata is re-read every ``STREAMSPACE_SAML_METADATA_TTL_S``
(key rollover, new endpoints); a failed refresh keeps the last good copy and retries.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from djangosaml2 import views as saml_views
from djangosaml2.backends import Saml2Backend
from saml2 import xmldsig
from saml2.config import SPConfig

from streamspace.accounts.models import SSOIdentity
from streamspace.accounts.sso import ExternalUser, provision, too_many_sso_failures

log = logging.getLogger(__name__)

# Accepted on every signature of a response; SHA-1 (and MD5, RIPEMD-160) are refused.
SIGNATURE_ALGORITHMS = frozenset(
    {
        xmldsig.SIG_RSA_SHA256,
        xmldsig.SIG_RSA_SHA384,
        xmldsig.SIG_RSA_SHA512,
        xmldsig.SIG_ECDSA_SHA256,
        xmldsig.SIG_ECDSA_SHA384,
        xmldsig.SIG_ECDSA_SHA512,
    }
)
DIGEST_ALGORITHMS = frozenset({xmldsig.DIGEST_SHA256, xmldsig.DIGEST_SHA384, xmldsig.DIGEST_SHA512})
# How soon a failed metadata refresh is tried again.
METADATA_RETRY_S = 60

# serialised SAML_CONFIG -> (monotonic time it is good until, the parsed config)
_configs: dict[str, tuple[float, SPConfig]] = {}


def _clock() -> float:
    return time.monotonic()


def _load_config(serialised: str) -> SPConfig:
    config = SPConfig()
    config.load(copy.deepcopy(json.loads(serialised)))
    return config


def config_loader(request: HttpRequest | None = None) -> SPConfig:
    """djangosaml2 ``SAML_CONFIG_LOADER``: the parsed config, IdP metadata at most TTL old.

    A refresh that fails (metadata URL down, a broken file) keeps the last good config and is
    tried again after :data:`METADATA_RETRY_S`, so an IdP outage never breaks sign-in here.
    """
    serialised = json.dumps(settings.SAML_CONFIG, sort_keys=True, default=str)
    now = _clock()
    cached = _configs.get(serialised)
    if cached is not None and now < cached[0]:
        return cached[1]
    try:
        config = _load_config(serialised)
    except Exception:
        if cached is None:
            raise
        log.warning("SAML IdP metadata could not be refreshed; using the last good copy", exc_info=True)
        _configs[serialised] = (now + METADATA_RETRY_S, cached[1])
        return cached[1]
    if cached is not None and not (config.metadata and config.metadata.identity_providers()):
        log.warning("SAML IdP metadata lists no identity provider now; using the last good copy")
        _configs[serialised] = (now + METADATA_RETRY_S, cached[1])
        return cached[1]
    _configs.clear()  # one settings value at a time
    _configs[serialised] = (now + settings.STREAMSPACE_SAML_METADATA_TTL_S, config)
    return config


class RefusedResponse(Exception):
    """A response pysaml2 verified that StreamSpace still refuses (see the module doc)."""


def _signatures(response: Any) -> list[Any]:
    outer = response.response
    assertions = [*(getattr(outer, "assertion", None) or []), response.assertion]
    return [s for s in [getattr(outer, "signature", None), *(getattr(a, "signature", None) for a in assertions)] if s]


def verified_issuer(response: Any) -> str:
    """The entity id of the IdP whose signature a verified ``AuthnResponse`` carries.

    Refuses (:class:`RefusedResponse`) weak signature or digest algorithms on any signature
    of the response, an assertion without Issuer, and a response whose own Issuer differs
    from its assertion's: pysaml2 checks the assertion's signature with the keys of the
    *assertion's* Issuer, and reports the *response's*, which is unsigned.
    """
    for signature in _signatures(response):
        info = signature.signed_info
        method = info.signature_method.algorithm if info.signature_method is not None else None
        if method not in SIGNATURE_ALGORITHMS:
            raise RefusedResponse(f"signature algorithm {method} is not accepted")
        for reference in info.reference or []:
            digest = reference.digest_method.algorithm if reference.digest_method is not None else None
            if digest not in DIGEST_ALGORITHMS:
                raise RefusedResponse(f"digest algorithm {digest} is not accepted")
    issuer_element = getattr(response.assertion, "issuer", None)
    issuer = (getattr(issuer_element, "text", None) or "").strip()
    if not issuer:
        raise RefusedResponse("the assertion names no issuer")
    outer = (getattr(response.response.issuer, "text", None) or "").strip()
    if outer and outer != issuer:
        raise RefusedResponse(f"response issuer {outer!r} is not the assertion's {issuer!r}")
    return issuer


class AssertionConsumerServiceView(saml_views.AssertionConsumerServiceView):
    """``/saml2/acs/``: djangosaml2's view plus :func:`verified_issuer`'s checks."""

    def custom_validation(self, response: Any) -> None:
        try:
            self.request.streamspace_saml_issuer = verified_issuer(response)  # type: ignore[attr-defined]
        except RefusedResponse as exc:
            log.warning("SAML response refused: %s", exc)
            self.request.streamspace_login_error = "saml:refused_algorithm_or_issuer"  # type: ignore[attr-defined]
            raise


def legacy_issuer(config: SPConfig | None = None) -> str:
    """The IdP that SAML identities recorded without an issuer belong to, or ``""`` if unknown.

    ``SAML_LEGACY_IDP_ENTITY_ID`` when set, else the only IdP of the metadata.
    """
    explicit = getattr(settings, "SAML_LEGACY_IDP_ENTITY_ID", "")
    if explicit:
        return explicit
    config = config or config_loader()
    idps = list(config.metadata.identity_providers()) if config.metadata else []
    return idps[0] if len(idps) == 1 else ""


def bind_legacy_identity(issuer: str, subject: str) -> bool:
    """Give a legacy identity of ``subject`` (no issuer) to ``issuer`` if it is theirs.

    Returns False when a legacy identity of that subject exists whose IdP cannot be told
    (several IdPs, no ``SAML_LEGACY_IDP_ENTITY_ID``): signing in would then create a second
    account, so it is refused until an administrator sets the variable.
    """
    legacy = SSOIdentity.objects.filter(provider="saml", issuer="", subject=subject)
    if not legacy.exists():
        return True
    owner = legacy_issuer()
    if not owner:
        log.error(
            "SAML identity %r was recorded without its IdP and several IdPs are configured: "
            "set SAML_LEGACY_IDP_ENTITY_ID to the IdP it came from",
            subject,
        )
        return False
    if owner == issuer and not SSOIdentity.objects.filter(provider="saml", issuer=issuer, subject=subject).exists():
        legacy.update(issuer=issuer)
    return True


def external_user(session_info: dict[str, Any], issuer: str = "") -> ExternalUser:
    """Map a verified assertion's NameID and attributes to an :class:`ExternalUser`."""
    name_id = session_info.get("name_id")
    subject = getattr(name_id, "text", None) or (name_id if isinstance(name_id, str) else "")
    external = ExternalUser(provider="saml", issuer=issuer, subject=str(subject or ""))
    for attribute, values in (session_info.get("ava") or {}).items():
        target = settings.SAML_ATTRIBUTE_MAP.get(attribute)
        values = [v for v in (values if isinstance(values, list) else [values]) if isinstance(v, str)]
        if not target or not values:
            continue
        if target == "groups":
            external.groups.extend(values)
        elif target in ("username", "email", "first_name", "last_name") and not getattr(external, target):
            setattr(external, target, values[0])
    if not external.username:
        external.username = external.email.split("@")[0] if external.email else external.subject
    return external


class SAMLBackend(Saml2Backend):
    """Authenticates a verified SAML assertion; provisioning in ``accounts.sso``."""

    def authenticate(
        self,
        request: HttpRequest | None,
        session_info: dict[str, Any] | None = None,
        attribute_mapping: Any = None,
        create_unknown_user: bool = True,
        assertion_info: Any = None,
        **kwargs: Any,
    ) -> Any:
        issuer = getattr(request, "streamspace_saml_issuer", "")
        if session_info is None or not issuer:  # only what our ACS view verified
            return None
        external = external_user(session_info, issuer)
        if not external.subject:
            log.warning("SAML assertion without NameID refused")
            return None
        if not bind_legacy_identity(issuer, external.subject):
            return None
        user = provision(external, role_map=settings.SAML_ROLE_MAP, request=request)
        return user if self.user_can_authenticate(user) else None


def acs_failure(
    request: HttpRequest, exception: Exception | None = None, status: int = 403, **kwargs: Any
) -> HttpResponse:
    """``SAML_ACS_FAILURE_RESPONSE_FUNCTION``: audit the refusal and show the login error page.

    Past the per-address SSO failure limit the refusal answers 429
    (:func:`.sso.too_many_sso_failures`); that never stops a valid response: those do not get here.
    """
    request.streamspace_login_method = "saml"  # type: ignore[attr-defined]
    reason = getattr(request, "streamspace_login_error", None) or (
        f"saml:{type(exception).__name__}" if exception is not None else "saml:saml_refused"
    )
    user_login_failed.send(sender=__name__, credentials={}, request=request, reason=reason)
    provider = settings.SAML_PROVIDER_NAME
    too_many = too_many_sso_failures(request, provider)
    return too_many or render(request, "account/sso_error.html", {"provider": provider}, status=status)

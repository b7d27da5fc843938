"""SAML 2.0 sign-in through djangosaml2 (pysaml2 + xmlsec1).

The SP requires signed assertions and refuses unsolicited responses, so each assertion must
answer an AuthnRequest of this browser session (which also makes a replayed response fail:
the request it answers is forgotten after the first use). Users are matched by NameID;
attributes map to user fields through ``SAML_ATTRIBUTE_MAP`` (IdP attribute name →
``username``/``email``/``first_name``/``last_name``/``groups``) and groups to roles through
``SAML_ROLE_MAP``.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from djangosaml2.backends import Saml2Backend
from saml2.config import SPConfig

from streamspace.accounts.sso import ExternalUser, provision

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def _load_config(serialised: str) -> SPConfig:
    config = SPConfig()
    config.load(copy.deepcopy(json.loads(serialised)))
    return config


def config_loader(request: HttpRequest | None = None) -> SPConfig:
    """djangosaml2 ``SAML_CONFIG_LOADER``: parse the config (and IdP metadata) once per process."""
    return _load_config(json.dumps(settings.SAML_CONFIG, sort_keys=True, default=str))


def external_user(session_info: dict[str, Any]) -> ExternalUser:
    """Map a verified assertion's NameID and attributes to an :class:`ExternalUser`."""
    name_id = session_info.get("name_id")
    subject = getattr(name_id, "text", None) or (name_id if isinstance(name_id, str) else "")
    external = ExternalUser(provider="saml", subject=str(subject or ""))
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
        if session_info is None:
            return None
        external = external_user(session_info)
        if not external.subject:
            log.warning("SAML assertion without NameID refused")
            return None
        user = provision(external, role_map=settings.SAML_ROLE_MAP, request=request)
        return user if self.user_can_authenticate(user) else None


def acs_failure(
    request: HttpRequest, exception: Exception | None = None, status: int = 403, **kwargs: Any
) -> HttpResponse:
    """``SAML_ACS_FAILURE_RESPONSE_FUNCTION``: audit the refusal and show the login error page."""
    request.streamspace_login_method = "saml"  # type: ignore[attr-defined]
    reason = type(exception).__name__ if exception is not None else "saml_refused"
    user_login_failed.send(sender=__name__, credentials={}, request=request, reason=f"saml:{reason}")
    return render(request, "account/sso_error.html", {"provider": settings.SAML_PROVIDER_NAME}, status=status)

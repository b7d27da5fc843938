"""OpenID Connect sign-in through mozilla-django-oidc (Authentik, Okta, Azure AD, Keycloak…).

Endpoints left unset are read from ``OIDC_OP_DISCOVERY_URL`` (the provider's
``.well-known/openid-configuration``) at the first use and cached, so the control plane
starts even while the provider is down. Users are matched by ``sub``; username, e-mail and
groups come from configurable claims (``OIDC_USERNAME_CLAIM``, ``OIDC_EMAIL_CLAIM``,
``OIDC_GROUPS_CLAIM``) and groups map to roles through ``OIDC_ROLE_MAP``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from streamspace.accounts.models import SSOIdentity
from streamspace.accounts.sso import ExternalUser, provision, too_many_sso_failures

log = logging.getLogger(__name__)

_DISCOVERY_KEYS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
    "OIDC_OP_LOGOUT_ENDPOINT": "end_session_endpoint",
}
_discovery_lock = threading.Lock()
_discovery_cache: dict[str, dict[str, Any]] = {}


def discovery_document(url: str) -> dict[str, Any]:
    """The provider's metadata (fetched once per process and URL)."""
    with _discovery_lock:
        if url not in _discovery_cache:
            response = requests.get(url, timeout=getattr(settings, "OIDC_TIMEOUT", 10) or 10)
            response.raise_for_status()
            document = response.json()
            if not isinstance(document, dict) or "authorization_endpoint" not in document:
                raise ImproperlyConfigured(f"{url} is not an OpenID Provider configuration document")
            _discovery_cache[url] = document
        return _discovery_cache[url]


def oidc_setting(attr: str, *args: Any) -> Any:
    """Like mozilla-django-oidc's ``import_from_settings``, filling endpoints from discovery."""
    value = getattr(settings, attr, None)
    if value in (None, "") and attr in _DISCOVERY_KEYS:
        discovery_url = getattr(settings, "OIDC_OP_DISCOVERY_URL", "")
        if discovery_url:
            value = discovery_document(discovery_url).get(_DISCOVERY_KEYS[attr])
            if value:
                return value
    if value in (None, ""):
        return import_from_settings(attr, *args)
    return value


def _claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    return value if isinstance(value, str) else ""


def groups_from_claims(claims: dict[str, Any]) -> list[str]:
    """Group names from ``OIDC_GROUPS_CLAIM`` (a list, or one string; Azure AD sends ids)."""
    value = claims.get(settings.OIDC_GROUPS_CLAIM)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


class OIDCBackend(OIDCAuthenticationBackend):
    """Authorization-code flow backend; provisioning in ``accounts.sso``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Django builds every backend for every authenticate() call: read the OIDC settings
        # (and perhaps fetch discovery) only when an OIDC callback is being handled.
        self.UserModel = get_user_model()

    @staticmethod
    def get_settings(attr: str, *args: Any) -> Any:
        return oidc_setting(attr, *args)

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> Any:
        if request is None or not settings.OIDC_ENABLED or not request.GET.get("code") or "nonce" not in kwargs:
            return None
        try:
            super().__init__()
            return super().authenticate(request, **kwargs)
        except (requests.RequestException, SuspiciousOperation, ValueError) as exc:
            # Expired/replayed code (token endpoint 400), nonce mismatch, bad signature.
            log.warning("OIDC sign-in refused: %s", exc)
            request.streamspace_login_error = type(exc).__name__  # type: ignore[attr-defined]
            return None

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return bool(claims.get("sub"))

    def filter_users_by_claims(self, claims: dict[str, Any]) -> list[Any]:
        identity = SSOIdentity.objects.filter(provider="oidc", subject=claims.get("sub", "")).select_related("user")
        return [i.user for i in identity]

    def _provision(self, claims: dict[str, Any]) -> Any:
        external = ExternalUser(
            provider="oidc",
            subject=str(claims["sub"]),
            username=_claim(claims, settings.OIDC_USERNAME_CLAIM) or _claim(claims, "email").split("@")[0],
            email=_claim(claims, settings.OIDC_EMAIL_CLAIM),
            first_name=_claim(claims, "given_name"),
            last_name=_claim(claims, "family_name"),
            groups=groups_from_claims(claims),
        )
        return provision(external, role_map=settings.OIDC_ROLE_MAP, request=self.request)

    def create_user(self, claims: dict[str, Any]) -> Any:
        return self._provision(claims)

    def update_user(self, user: Any, claims: dict[str, Any]) -> Any:
        return self._provision(claims)


class OIDCLoginView(OIDCAuthenticationRequestView):
    """``/oidc/authenticate/``: redirect to the provider (state, nonce and PKCE in the session)."""

    @staticmethod
    def get_settings(attr: str, *args: Any) -> Any:
        return oidc_setting(attr, *args)


class OIDCCallbackView(OIDCAuthenticationCallbackView):
    """``/oidc/callback/``: a refused sign-in (bad state, nonce or code) lands on the login page."""

    @staticmethod
    def get_settings(attr: str, *args: Any) -> Any:
        return oidc_setting(attr, *args)

    def get(self, request: HttpRequest) -> HttpResponse:
        request.streamspace_login_method = "oidc"  # type: ignore[attr-defined]
        try:
            return super().get(request)
        except SuspiciousOperation as exc:  # unknown state: forged or replayed callback
            log.warning("OIDC callback refused: %s", exc)
            user_login_failed.send(sender=__name__, credentials={}, request=request, reason="oidc_invalid_state")
            return self.login_failure()

    def login_failure(self) -> HttpResponse:
        too_many = too_many_sso_failures(self.request, settings.OIDC_PROVIDER_NAME)
        if too_many is not None:
            return too_many
        messages.error(self.request, "Single sign-on did not complete. Please try again.")
        return super().login_failure()

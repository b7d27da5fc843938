"""Template context for the sign-in pages: which SSO buttons to show, whether sign-up is open."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def identity(request: HttpRequest) -> dict[str, Any]:
    providers = []
    if getattr(settings, "OIDC_ENABLED", False):
        providers.append({"id": "oidc", "label": settings.OIDC_PROVIDER_NAME, "url": "/oidc/authenticate/"})
    if getattr(settings, "SAML_ENABLED", False):
        providers.append({"id": "saml", "label": settings.SAML_PROVIDER_NAME, "url": "/saml2/login/"})
    return {"sso_providers": providers, "signup_enabled": bool(getattr(settings, "STREAMSPACE_SIGNUP_ENABLED", False))}

"""System checks: settings that would let a session's origin act as the portal.

Every session is served on ``<session-id>.<STREAMSPACE_SESSION_DOMAIN>``, an origin whose
content its owner writes. These settings must not extend the portal's trust to those hosts:
a cookie ``Domain`` covering them (the portal's login would reach every session), a trusted
CSRF origin or an allowed CORS origin matching them (a session's page could call the API).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, register
from django.utils.http import is_same_domain

from sessions_app.proxy.origins import is_session_origin

# Any session's host: what a pattern must not match.
_SAMPLE_ID = "00000000-0000-4000-8000-000000000000"


def _session_host() -> str:
    return f"{_SAMPLE_ID}.{settings.STREAMSPACE_SESSION_DOMAIN}"


def _cookie_domains_errors(host: str) -> list[Error]:
    errors = []
    for name in ("SESSION_COOKIE_DOMAIN", "CSRF_COOKIE_DOMAIN", "LANGUAGE_COOKIE_DOMAIN"):
        domain = (getattr(settings, name, None) or "").lstrip(".").lower()
        if domain and (host == domain or host.endswith("." + domain)):
            errors.append(
                Error(
                    f"{name}={domain!r} covers the session origins (*.{settings.STREAMSPACE_SESSION_DOMAIN}): "
                    "the portal's cookies would reach every session's content.",
                    hint=f"Leave {name} unset (host-only cookies).",
                    id="streamspace.E101",
                )
            )
    return errors


def _origin_errors(host: str) -> list[Error]:
    errors = []
    for pattern in getattr(settings, "CSRF_TRUSTED_ORIGINS", []):
        name = urlsplit(pattern).netloc.lower().split(":")[0]
        # "*.example.com" as Django reads it, or one session's own origin.
        if name and (is_same_domain(host, name.removeprefix("*")) or is_session_origin(pattern)):
            errors.append(
                Error(
                    f"CSRF_TRUSTED_ORIGINS entry {pattern!r} matches the session origins: "
                    "a session's page could post to the portal as its viewer.",
                    hint=f"List only the portal's own origin, never *.{settings.STREAMSPACE_SESSION_DOMAIN}.",
                    id="streamspace.E102",
                )
            )
    origin = f"https://{host}"
    cors = list(getattr(settings, "CORS_ALLOWED_ORIGINS", []))
    matches = getattr(settings, "CORS_ALLOW_ALL_ORIGINS", False) or any(is_session_origin(entry) for entry in cors)
    matches = matches or any(
        re.match(regex, origin) or re.match(regex, f"http://{host}")
        for regex in getattr(settings, "CORS_ALLOWED_ORIGIN_REGEXES", [])
    )
    if matches:
        errors.append(
            Error(
                "CORS lets the session origins call the API: a session's page could read the portal's answers.",
                hint="Keep CORS_ALLOWED_ORIGINS / CORS_ALLOWED_ORIGIN_REGEXES off the session domain.",
                id="streamspace.E103",
            )
        )
    return errors


@register(Tags.security)
def session_origin_isolation_check(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    host = _session_host()
    return _cookie_domains_errors(host) + _origin_errors(host)

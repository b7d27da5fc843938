"""Login throttling glue for django-axes: whose attempts count and what a locked client sees.

The lockout answer is the same whether or not the account exists (axes counts attempts per
submitted username and client address, never per existing user), and the failure answer
before the lockout is the same too: ``invalid_credentials``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

LOCKED_OUT_DETAIL = "Too many failed sign-in attempts. Try again later."


def lockout_seconds() -> int:
    cool_off = getattr(settings, "AXES_COOLOFF_TIME", None)
    if cool_off is None:
        return 0
    if hasattr(cool_off, "total_seconds"):
        return int(cool_off.total_seconds())
    return int(float(cool_off) * 3600)  # axes reads a number as hours


def username_from(request: HttpRequest, credentials: dict[str, Any] | None) -> str | None:
    """The submitted login name from any of our forms (API ``username``, allauth ``login``)."""
    credentials = credentials or {}
    for key in ("username", "email", "login"):
        if credentials.get(key):
            return str(credentials[key]).strip().lower()[:150]
    data = getattr(request, "POST", None) or {}
    for key in ("login", "username"):
        if data.get(key):
            return str(data[key]).strip().lower()[:150]
    return None


def lockout_response(request: HttpRequest, original_response: Any = None, credentials: Any = None) -> HttpResponse:
    """JSON for the API, an HTML page for the portal; 429 with ``Retry-After`` either way."""
    seconds = lockout_seconds()
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"code": "locked_out", "detail": LOCKED_OUT_DETAIL}, status=429)
    else:
        html = render_to_string("account/lockout.html", {"cooloff_minutes": max(1, seconds // 60)}, request=request)
        response = HttpResponse(html, status=429)
    if seconds:
        response["Retry-After"] = str(seconds)
    return response

"""Password sign-in throttling: whose attempts count, who must wait, what a waiting client sees.

Two limits, checked by :class:`LoginThrottleBackend` before any password is:

* django-axes' lockout per submitted account name *and* client address
  (``LOGIN_FAILURE_LIMIT`` failures → ``LOGIN_LOCKOUT_MINUTES``);
* the per-account backoff of :mod:`streamspace.accounts.throttle`, whatever the address.

Both answer the same whether or not the account exists (attempts are counted per submitted
name, never per existing user), and the failure answer before either is the same too:
``invalid_credentials``. Attempts without an account name (SSO callbacks) are neither
counted nor refused here: a refused SAML response or OIDC callback must never stop a later
valid one (see :func:`not_a_password_attempt` and the SSO limit in ``accounts.throttle``).
"""

from __future__ import annotations

import math
from typing import Any

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

from streamspace.accounts import throttle

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


def not_a_password_attempt(request: HttpRequest, credentials: dict[str, Any] | None) -> bool:
    """``AXES_WHITELIST_CALLABLE``: axes neither counts nor refuses attempts without a name.

    Those are SSO callbacks (a SAML response, an OIDC code): a junk one from an address must
    not lock out the valid ones that follow from it (one office behind NAT is one address).
    """
    return username_from(request, credentials) is None


def refusal(request: Any) -> str | None:
    """Why this request's sign-in was refused before any password check, if it was."""
    return getattr(request, "streamspace_login_refused", None)


class LoginThrottleBackend(AxesStandaloneBackend):
    """First in ``AUTHENTICATION_BACKENDS``: refuses a password attempt that must wait.

    axes' lockout first, then the per-account backoff. A refusal raises ``PermissionDenied``
    (Django then stops trying backends and sends ``user_login_failed``), sets
    ``request.axes_locked_out`` so that axes' middleware and the API login answer with
    :func:`lockout_response`, and marks the request (:func:`refusal`) so that the refused
    attempt is not counted as a failure: nothing was checked.
    """

    def authenticate(
        self, request: HttpRequest, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> None:
        try:
            super().authenticate(request, username, password, **kwargs)
        except PermissionDenied:
            request.streamspace_login_refused = "locked_out"  # type: ignore[attr-defined]
            raise
        if password is None:  # not a password sign-in (SSO backends get other credentials)
            return None
        wait = throttle.retry_after(username_from(request, {"username": username, **kwargs}))
        if wait:
            request.streamspace_login_refused = "backoff"  # type: ignore[attr-defined]
            request.streamspace_retry_after = wait  # type: ignore[attr-defined]
            request.axes_locked_out = True  # type: ignore[attr-defined]
            raise PermissionDenied("This account must wait before the next sign-in attempt.")
        return None


def wait_seconds(request: HttpRequest) -> int:
    """Seconds a refused client should wait: the account's backoff, else axes' cool-off."""
    return getattr(request, "streamspace_retry_after", None) or lockout_seconds()


def lockout_response(request: HttpRequest, original_response: Any = None, credentials: Any = None) -> HttpResponse:
    """JSON for the API, an HTML page for the portal; 429 with ``Retry-After`` either way."""
    seconds = wait_seconds(request)
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"code": "locked_out", "detail": LOCKED_OUT_DETAIL}, status=429)
    else:
        context = {"retry_minutes": math.ceil(seconds / 60), "retry_seconds": seconds}
        html = render_to_string("account/lockout.html", context, request=request)
        response = HttpResponse(html, status=429)
    if seconds:
        response["Retry-After"] = str(seconds)
    return response

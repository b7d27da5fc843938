"""Portal enforcement of ``STREAMSPACE_MFA_REQUIRED``: enrol before anything else.

API requests are checked by the DRF authentication classes instead (they know the user of a
bearer or API token, which this middleware does not).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from streamspace.accounts import mfa

_ALWAYS_ALLOWED = ("/static/", "/api/", "/healthz", "/readyz", "/metrics", "/favicon")


class MfaEnrolmentMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(_ALWAYS_ALLOWED) and mfa.must_enrol(request.user):
            allowed = (reverse("mfa_index"), reverse("account_logout"))
            if not request.path.startswith(allowed):
                return redirect("mfa_setup")
        return self.get_response(request)

"""The portal session's user (through ``accounts.user_cache``) and the MFA enrolment gate.

``AuthenticationMiddleware`` is Django's, with the session's user read the way every other
kind of authentication reads it: from the shared cache, current on every replica after any
change (deactivation, sign-out, new password); from the user's cache entry the session
store read with the session, in one round trip, when it did (``accounts.session_store``).
``MfaEnrolmentMiddleware`` enforces ``STREAMSPACE_MFA_REQUIRED`` in the portal; API requests
are checked by the DRF authentication classes instead (they know the user of a bearer or
API token, which this middleware does not).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import auth
from django.contrib.auth import middleware as django_auth
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.crypto import constant_time_compare
from django.utils.functional import SimpleLazyObject

from streamspace.accounts import mfa, user_cache


def _backend_user(backend: Any, user_id: Any, prefetched: user_cache.Prefetched | None = None) -> Any:
    """``backend.get_user(user_id)``, read through the cache when it is ``ModelBackend``'s lookup.

    ``prefetched``: the user's cache entry as read with the session (``accounts.session_store``).
    """
    if type(backend).get_user is not ModelBackend.get_user:  # e.g. OIDC's: its own rules
        return backend.get_user(user_id)
    user = user_cache.get(user_id, prefetched)
    return user if user is not None and backend.user_can_authenticate(user) else None


def session_user(request: HttpRequest) -> Any:
    """``django.contrib.auth.get_user`` with the user read by :func:`_backend_user`.

    The same checks in the same order: the session's backend must be configured, and the
    session's hash of the password must match (else the session is flushed; a fallback
    secret's hash is replaced).
    """
    try:
        user_id = auth._get_user_session_key(request)
        backend_path = request.session[auth.BACKEND_SESSION_KEY]
    except KeyError:
        return AnonymousUser()
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return AnonymousUser()
    prefetched = getattr(request.session, "prefetched_user", None)  # with the session, in one round trip
    user = _backend_user(auth.load_backend(backend_path), user_id, prefetched)
    if hasattr(user, "get_session_auth_hash"):
        session_hash = request.session.get(auth.HASH_SESSION_KEY)
        if not (session_hash and constant_time_compare(session_hash, user.get_session_auth_hash())):
            if session_hash and any(
                constant_time_compare(session_hash, fallback) for fallback in user.get_session_auth_fallback_hash()
            ):
                request.session.cycle_key()
                request.session[auth.HASH_SESSION_KEY] = user.get_session_auth_hash()
            else:
                request.session.flush()
                user = None
    return user or AnonymousUser()


def _cached_session_user(request: HttpRequest) -> Any:
    if not hasattr(request, "_cached_user"):
        request._cached_user = session_user(request)
    return request._cached_user


_async_cached_session_user = sync_to_async(_cached_session_user)


class AuthenticationMiddleware(django_auth.AuthenticationMiddleware):
    """Django's, with ``request.user`` (and ``request.auser()``) from :func:`session_user`."""

    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)  # its checks
        request.user = SimpleLazyObject(partial(_cached_session_user, request))
        request.auser = partial(_async_cached_session_user, request)


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

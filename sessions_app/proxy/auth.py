"""Who may reach a session through the proxy (docs/architecture.md §10.1).

Credentials, in order: a viewer token in ``?token=`` (short-lived, bound to session and
user; exchanged for the viewer cookie), the viewer cookie (scoped to the session's prefix),
``Authorization: Bearer <access JWT>`` (API clients), the portal's Django session cookie.
The owner, admins, operators and users the session is explicitly shared with pass. A
session that does not exist is a 404, no credential a 401, no right a 403, a stopped
session a 410 (so a viewer token cannot be replayed after stop). Two account rules hold
whatever the credential: a user who must enrol in two-factor authentication first
(``accounts.mfa.must_enrol``) gets a 403 ``mfa_enrollment_required``, and a viewer token or
cookie from an earlier credentials epoch (the user has signed out or changed the password
since, ``accounts.credentials``) is a 401 like no credential.

The database is touched in one small ``database_sync_to_async`` call; its answer is cached
in-process per credential for ``STREAMSPACE_PROXY_AUTH_CACHE_S`` (only for running sessions,
so wake-up progress is always seen at once).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from importlib import import_module
from types import SimpleNamespace
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.core import signing

from sessions_app.models import Session, SessionState
from sessions_app.proxy.paths import ProxyPath
from sessions_app.proxy.rewrite import VIEWER_COOKIE, header_value, parse_cookies
from sessions_app.viewer import read_viewer_token
from streamspace.accounts import credentials, mfa
from streamspace.api.auth_header import bearer_token

_COOKIE_SALT = "streamspace.viewer-cookie"
_CACHE_MAX = 20_000
ENDED_STATES = frozenset({SessionState.STOPPING, SessionState.STOPPED, SessionState.FAILED})


@dataclass(frozen=True)
class SessionTarget:
    """What the proxy needs to know about a session it may forward to."""

    session_id: uuid.UUID
    user_id: int  # the caller, not the owner
    state: str
    streaming_ready: bool
    endpoint: str
    port: int | None
    agent_pk: int | None
    proxy_mode: str
    status_message: str

    @property
    def ready(self) -> bool:
        return self.state == SessionState.RUNNING and self.streaming_ready


@dataclass(frozen=True)
class Decision:
    status: int  # 200 = allowed
    code: str = ""
    detail: str = ""
    target: SessionTarget | None = None
    set_cookie: str | None = None  # value for a Set-Cookie header
    redirect: str | None = None  # strip the token by redirecting here


def make_viewer_cookie(session_id: Any, user_id: Any, *, epoch: int = 0) -> str:
    """The viewer cookie's value; it carries the credentials epoch of the token it replaces."""
    data = {"s": str(session_id), "u": user_id, credentials.EPOCH_CLAIM: epoch}
    return signing.dumps(data, salt=_COOKIE_SALT, compress=False)


def read_viewer_cookie(value: str) -> dict[str, Any] | None:
    try:
        data = signing.loads(value, salt=_COOKIE_SALT, max_age=settings.STREAMSPACE_VIEWER_COOKIE_TTL_S)
    except signing.BadSignature:
        return None
    return data if isinstance(data, dict) and "s" in data and "u" in data else None


def cookie_header(path: ProxyPath, value: str) -> str:
    parts = [
        f"{VIEWER_COOKIE}={value}",
        f"Path={path.cookie_path}",
        f"Max-Age={settings.STREAMSPACE_VIEWER_COOKIE_TTL_S}",
        "HttpOnly",
        "SameSite=Lax",
    ]
    if not settings.DEBUG:
        parts.append("Secure")
    return "; ".join(parts)


# --- cache --------------------------------------------------------------------------------
_cache: dict[tuple, tuple[float, Decision]] = {}


def clear_cache() -> None:
    _cache.clear()


def _cached(key: tuple) -> Decision | None:
    hit = _cache.get(key)
    if hit is None:
        return None
    if hit[0] < time.monotonic():
        _cache.pop(key, None)
        return None
    return hit[1]


def _remember(key: tuple, decision: Decision) -> None:
    ttl = settings.STREAMSPACE_PROXY_AUTH_CACHE_S
    if ttl <= 0 or decision.status != 200 or decision.target is None or not decision.target.ready:
        return
    if len(_cache) >= _CACHE_MAX:
        now = time.monotonic()
        for stale in [k for k, (exp, _) in _cache.items() if exp < now] or list(_cache)[: _CACHE_MAX // 10]:
            _cache.pop(stale, None)
    _cache[key] = (time.monotonic() + ttl, decision)


# --- database (one thread hop per uncached request) ---------------------------------------
def _user_from_django_session(session_key: str) -> int | None:
    from django.contrib.auth import get_user

    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(SimpleNamespace(session=store))
    return user.pk if user.is_authenticated else None


def _user_from_jwt(raw: str) -> int | None:
    from rest_framework_simplejwt.exceptions import TokenError
    from rest_framework_simplejwt.settings import api_settings
    from rest_framework_simplejwt.tokens import AccessToken

    try:
        token = AccessToken(raw)
    except TokenError:
        return None
    return token.get(api_settings.USER_ID_CLAIM)


def _load(session_id: uuid.UUID, user_id: Any, epoch: int | None = None, *, viewer: bool = False) -> Decision:
    """The decision for ``user_id`` on ``session_id``; ``viewer``: the credential was a viewer
    token or cookie of credentials epoch ``epoch``."""
    from django.contrib.auth import get_user_model

    from streamspace.accounts.models import Role

    row = (
        Session.objects.filter(pk=session_id)
        .values(
            "user_id",
            "state",
            "streaming_ready",
            "endpoint",
            "streaming_port",
            "template__streaming_port",
            "agent_id",
            "agent__proxy_mode",
            "status_message",
        )
        .first()
    )
    if row is None:
        return Decision(404, "not_found", "No such session.")
    if user_id is None:
        return Decision(401, "not_authenticated", "Open this session from the StreamSpace portal.")
    users = get_user_model().objects.filter(pk=user_id, is_active=True)
    user = users.only("role", "password", "credentials_epoch").first()
    # A viewer credential from before a sign-out or password change is no credential.
    if user is None or (viewer and not credentials.is_current(epoch, user.credentials_epoch)):
        return Decision(401, "not_authenticated", "Open this session from the StreamSpace portal.")
    if mfa.must_enrol(user):  # the portal and the API refuse such a user everything else too
        return Decision(403, "mfa_enrollment_required", "Set up two-factor authentication first.")
    allowed = (
        row["user_id"] == user_id
        or user.role in (Role.ADMIN, Role.OPERATOR)
        or Session.shared_with.through.objects.filter(session_id=session_id, user_id=user_id).exists()
    )
    if not allowed:
        return Decision(403, "permission_denied", "This session is not shared with you.")
    if row["state"] in ENDED_STATES:
        return Decision(410, "session_ended", f"The session is {row['state']}.")
    target = SessionTarget(
        session_id=session_id,
        user_id=user_id,
        state=row["state"],
        streaming_ready=row["streaming_ready"],
        endpoint=row["endpoint"] or "",
        port=row["streaming_port"] or row["template__streaming_port"],
        agent_pk=row["agent_id"],
        proxy_mode=row["agent__proxy_mode"] or "auto",
        status_message=row["status_message"],
    )
    return Decision(200, target=target)


def _resolve(kind: str, credential: str, session_id: uuid.UUID, epoch: int | None = None) -> Decision:
    if kind == "viewer":
        data = read_viewer_cookie(credential)
        user_id = data["u"] if data else None
        epoch = credentials.claimed_epoch(data) if data else None
    elif kind == "session":
        user_id = _user_from_django_session(credential)
    elif kind == "jwt":
        user_id = _user_from_jwt(credential)
    else:
        user_id = credential or None
    try:
        user_id = int(user_id) if user_id is not None else None
    except (TypeError, ValueError):
        user_id = None
    return _load(session_id, user_id, epoch, viewer=kind in ("viewer", "token"))


_resolve_async = database_sync_to_async(_resolve)


def cached_decision(scope: dict, path: ProxyPath) -> Decision | None:
    """The remembered decision for this request's viewer cookie, if any (no I/O, no await).

    The common case of every request after the first: a hit here is what :func:`authorize`
    would answer, without the coroutine.
    """
    if path.token is not None:
        return None
    viewer = parse_cookies(scope.get("headers") or []).get(VIEWER_COOKIE)
    return _cached(("viewer", viewer, path.session_id)) if viewer else None


async def authorize(scope: dict, path: ProxyPath) -> Decision:
    """Decide a proxy request (HTTP or WebSocket) before anything is forwarded."""
    headers = scope.get("headers") or []
    sid = path.session_id
    if path.token is not None:
        data = read_viewer_token(path.token)
        if data is None:
            return Decision(403, "invalid_token", "The viewer link is invalid or has expired.")
        if data["s"] != str(sid):
            return Decision(403, "invalid_token", "The viewer link belongs to another session.")
        epoch = credentials.claimed_epoch(data)
        decision = await _resolve_async("token", str(data["u"]), sid, epoch)
        if decision.status != 200:
            return decision
        cookie = cookie_header(path, make_viewer_cookie(sid, data["u"], epoch=epoch or 0))
        return Decision(200, target=decision.target, set_cookie=cookie, redirect=path.public_url())

    cookies = parse_cookies(headers)
    kind, credential = "user", ""
    viewer = cookies.get(VIEWER_COOKIE)
    if viewer:
        # The raw signed value is the cache key, so a hit skips the HMAC check too.
        decision = _cached(("viewer", viewer, sid))
        if decision is not None:
            return decision
    data = read_viewer_cookie(viewer) if viewer else None
    if data is not None and data["s"] == str(sid):
        kind, credential = "viewer", viewer
    else:
        token = bearer_token(header_value(headers, b"authorization"))
        if token:
            kind, credential = "jwt", token
        elif cookies.get(settings.SESSION_COOKIE_NAME):
            kind, credential = "session", cookies[settings.SESSION_COOKIE_NAME]

    key = (kind, credential, sid)
    decision = _cached(key)
    if decision is None:
        decision = await _resolve_async(kind, credential, sid)
        _remember(key, decision)
    return decision

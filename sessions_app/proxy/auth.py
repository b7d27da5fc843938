"""Who may reach a session through the proxy (docs/architecture.md §10.1).

Two ways in, each with its own credentials:

* **The session's own origin** (browsers; :mod:`.origins`). A viewer token in ``?token=``
  (short-lived, bound to session and user, issued by the portal) is exchanged for the viewer
  cookie: a cookie of that host alone (no ``Domain``), ``HttpOnly``, ``Path=/``; later
  requests present it. Nothing else counts there, and the portal's cookies never reach
  that host (they are host-only cookies of the portal's host).
* **The portal's prefix** ``/api/v1/http/<id>/`` (API clients): only an ``Authorization``
  header, ``Bearer <access JWT>`` or ``Token <API token>`` (write or admin scope). A page
  cannot make a browser send one, so what a session serves there never runs with the
  portal's cookies; the portal's login cookie and viewer cookies are ignored on the prefix.

The owner, admins, operators and users the session is explicitly shared with pass (an API
token counts its owner's admin or operator role only with the ``admin`` scope). A session
that does not exist is a 404, no credential a 401, no right a 403, a stopped session a 410
(so a viewer token cannot be replayed after stop). Two account rules hold whatever the
credential: a user who must enrol in two-factor authentication first
(``accounts.mfa.must_enrol``) gets a 403 ``mfa_enrollment_required``, and a viewer token or
cookie from an earlier credentials epoch (the user has signed out or changed the password
since, ``accounts.credentials``) is a 401 like no credential.

The viewer cookie is ``SameSite=Lax`` (``Secure`` over HTTPS) when the portal and the session
origin are one site (``streamspace.example.com`` and ``*.sessions.example.com``). When the
browser says the token arrived from another site (``Sec-Fetch-Site: cross-site``: the
``make run`` default, ``localhost`` and ``<id>.localhost``, are two sites) a ``Lax`` cookie would
never be sent inside the portal's frame, so the cookie is ``Partitioned`` (CHIPS):
``SameSite=None; Secure`` (browsers accept ``Secure`` on ``http://*.localhost``), kept in the
portal site's partition and sent only under it.

The database is touched in one small ``database_sync_to_async`` call; its answer is cached
in-process per credential for ``STREAMSPACE_PROXY_AUTH_CACHE_S`` (only for running sessions,
so wake-up progress is always seen at once).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.core import signing

from sessions_app.models import Session, SessionState
from sessions_app.proxy.paths import ProxyPath
from sessions_app.proxy.rewrite import VIEWER_COOKIE, cookie_values, header_value
from sessions_app.proxy.stream_auth import upstream_authorization
from sessions_app.viewer import expired_token_portal, read_viewer_token
from streamspace.accounts import credentials, mfa
from streamspace.accounts.models import Role, TokenScope, User
from streamspace.accounts.tokens import authenticate_key
from streamspace.api.auth_header import parse_authorization
from streamspace.api.client_ip import scope_ip

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
    # ``Authorization`` sent upstream with every request and handshake (``stream_auth``); None: none.
    upstream_authorization: bytes | None = None

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
    # The portal origin that may frame the session (from the viewer token or cookie; "" unknown).
    portal_origin: str = ""


def make_viewer_cookie(session_id: Any, user_id: Any, *, epoch: int = 0, portal: str = "") -> str:
    """The viewer cookie's value: it carries the credentials epoch of the token it replaces and
    the portal origin that may frame the session."""
    payload: dict[str, Any] = {"s": str(session_id), "u": user_id, credentials.EPOCH_CLAIM: epoch}
    if portal:
        payload["o"] = portal
    return signing.dumps(payload, salt=_COOKIE_SALT, compress=False)


def read_viewer_cookie(value: str) -> dict[str, Any] | None:
    try:
        data = signing.loads(value, salt=_COOKIE_SALT, max_age=settings.STREAMSPACE_VIEWER_COOKIE_TTL_S)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or "s" not in data or "u" not in data or not isinstance(data.get("o", ""), str):
        return None
    return data


def cookie_header(value: str, *, secure: bool, cross_site: bool = False) -> str:
    """``Set-Cookie`` for the viewer cookie: host-only (no ``Domain``), ``Path=/``, ``HttpOnly``."""
    parts = [f"{VIEWER_COOKIE}={value}", "Path=/", f"Max-Age={settings.STREAMSPACE_VIEWER_COOKIE_TTL_S}", "HttpOnly"]
    if cross_site:
        parts += ["Secure", "SameSite=None", "Partitioned"]
    else:
        parts.append("SameSite=Lax")
        if secure:
            parts.append("Secure")
    return "; ".join(parts)


def _secure(scope: dict) -> bool:
    return scope.get("scheme") in ("https", "wss") or not settings.DEBUG


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
def _user_from_jwt(raw: str) -> int | None:
    # simplejwt reads DRF's settings when it loads: imported on first use.
    from rest_framework_simplejwt.exceptions import TokenError  # noqa: PLC0415 see above
    from rest_framework_simplejwt.settings import api_settings  # noqa: PLC0415 see above
    from rest_framework_simplejwt.tokens import AccessToken  # noqa: PLC0415 see above

    try:
        token = AccessToken(raw)
    except TokenError:
        return None
    return token.get(api_settings.USER_ID_CLAIM)


def _load(
    session_id: uuid.UUID, user_id: Any, *, viewer: bool = False, epoch: int | None = None, staff_rights: bool = True
) -> Decision:
    """The decision for ``user_id`` on ``session_id``. ``viewer``: the credential was a viewer
    token or cookie of credentials epoch ``epoch``; ``staff_rights``: an admin's or operator's
    role counts (not through an API token without the admin scope)."""
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
            "stream_secret",
            "stream_view_secret",
        )
        .first()
    )
    if row is None:
        return Decision(404, "not_found", "No such session.")
    if user_id is None:
        return Decision(401, "not_authenticated", "Open this session from the StreamSpace portal.")
    user = User.objects.filter(pk=user_id, is_active=True).only("role", "password", "credentials_epoch").first()
    # A viewer credential from before a sign-out or password change is no credential.
    if user is None or (viewer and not credentials.is_current(epoch, user.credentials_epoch)):
        return Decision(401, "not_authenticated", "Open this session from the StreamSpace portal.")
    if mfa.must_enrol(user):  # the portal and the API refuse such a user everything else too
        return Decision(403, "mfa_enrollment_required", "Set up two-factor authentication first.")
    allowed = (
        row["user_id"] == user_id
        or (staff_rights and user.role in (Role.ADMIN, Role.OPERATOR))
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
        upstream_authorization=_upstream_authorization(row, view_only=False),
    )
    return Decision(200, target=target)


def _upstream_authorization(row: dict[str, Any], *, view_only: bool) -> bytes | None:
    value = upstream_authorization(SimpleNamespace(**row), view_only=view_only)
    return value.encode("ascii") if value is not None else None


def _as_user_id(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _resolve(
    kind: str, credential: str, session_id: uuid.UUID, client_ip: str = "", epoch: int | None = None
) -> Decision:
    """The decision for one credential: ``viewer`` (a user id from a verified viewer token or
    cookie of credentials epoch ``epoch``), ``jwt``, ``apitoken`` or ``none``."""
    if kind == "jwt":
        return _load(session_id, _as_user_id(_user_from_jwt(credential)))
    if kind == "apitoken":
        token = authenticate_key(credential, request=SimpleNamespace(META={"REMOTE_ADDR": client_ip}))
        if token is None:
            return _load(session_id, None)
        if token.scope == TokenScope.READ:
            return Decision(
                403, "insufficient_scope", "A read-scope API token cannot reach sessions; use a write-scope token."
            )
        return _load(session_id, token.user_id, staff_rights=token.scope == TokenScope.ADMIN)
    if kind == "viewer":
        return _load(session_id, _as_user_id(credential), viewer=True, epoch=epoch)
    return _load(session_id, None)


_resolve_async = database_sync_to_async(_resolve)


def cached_decision(scope: dict, path: ProxyPath) -> Decision | None:
    """The remembered decision for this request's credential, if any (no I/O, no await).

    The common case of every request after the first: a hit here is what :func:`authorize`
    would answer, without the coroutine.
    """
    if path.token is not None:
        return None
    headers = scope.get("headers") or []
    if not path.on_session_host:
        key = _api_key(headers, path.session_id)
        return _cached(key) if key[0] != "none" else None
    for value in cookie_values(headers, VIEWER_COOKIE):
        decision = _cached(("viewer", value, path.session_id))
        if decision is not None:
            return decision
    return None


async def authorize(scope: dict, path: ProxyPath) -> Decision:
    """Decide a proxy request (HTTP or WebSocket) before anything is forwarded."""
    if path.on_session_host:
        return await _authorize_viewer(scope, path)
    return await _authorize_api_client(scope, path)


async def _authorize_viewer(scope: dict, path: ProxyPath) -> Decision:
    """On the session's origin: the viewer token (exchanged for the cookie) or the viewer cookie."""
    sid = path.session_id
    if path.token is not None:
        data = read_viewer_token(path.token)
        if data is None:
            detail = "The viewer link is invalid or has expired."
            return Decision(403, "invalid_token", detail, portal_origin=expired_token_portal(path.token))
        portal = data.get("o", "")
        if data["s"] != str(sid):
            return Decision(403, "invalid_token", "The viewer link belongs to another session.", portal_origin=portal)
        epoch = credentials.claimed_epoch(data)
        decision = await _resolve_async("viewer", str(data["u"]), sid, "", epoch)
        if decision.status != 200:
            return replace(decision, portal_origin=portal)
        cross_site = header_value(scope.get("headers") or [], b"sec-fetch-site") == b"cross-site"
        value = make_viewer_cookie(sid, data["u"], epoch=epoch or 0, portal=portal)
        cookie = cookie_header(value, secure=_secure(scope), cross_site=cross_site)
        return Decision(
            200, target=decision.target, set_cookie=cookie, redirect=path.public_url(), portal_origin=portal
        )

    # A browser may hold more than one (one per cookie partition): the first of this session wins.
    for value in cookie_values(scope.get("headers") or [], VIEWER_COOKIE):
        key = ("viewer", value, sid)
        decision = _cached(key)  # the raw signed value is the key, so a hit skips the HMAC check too
        if decision is not None:
            return decision
        data = read_viewer_cookie(value)
        if data is None or data["s"] != str(sid):
            continue
        resolved = await _resolve_async("viewer", str(data["u"]), sid, "", credentials.claimed_epoch(data))
        decision = replace(resolved, portal_origin=data.get("o", ""))
        _remember(key, decision)
        return decision
    return await _resolve_async("none", "", sid)


def _api_key(headers: list, session_id: uuid.UUID) -> tuple[str, str, uuid.UUID]:
    """``(kind, credential, session)`` of an ``Authorization`` header: ``jwt``, ``apitoken`` or ``none``."""
    scheme, credential = parse_authorization(header_value(headers, b"authorization"))
    kind = {"bearer": "jwt", "token": "apitoken"}.get(scheme, "none") if credential else "none"
    return kind, credential if kind != "none" else "", session_id


async def _authorize_api_client(scope: dict, path: ProxyPath) -> Decision:
    """On the portal's prefix: an ``Authorization`` header only (never a cookie)."""
    key = _api_key(scope.get("headers") or [], path.session_id)
    decision = _cached(key)
    if decision is None:
        decision = await _resolve_async(key[0], key[1], path.session_id, scope_ip(scope))
        _remember(key, decision)
    return decision

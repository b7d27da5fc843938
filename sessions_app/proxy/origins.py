"""Per-session origins: each session is served on its own host, ``<session-id>.<domain>``.

A session's web content is written by whoever runs the session. Served on the portal's
origin it would run with the portal's authority (its cookies, its API, its pages); on an
origin of its own the browser's same-origin policy keeps it away from all three. The
domain is ``STREAMSPACE_SESSION_DOMAIN`` (``localhost`` by default: browsers resolve
``*.localhost`` to the loopback, so ``make run`` needs no DNS set-up).

A request whose ``Host`` is ``<canonical session id>.<domain>`` (any port) belongs to that
session, whatever its path; every other host is the portal's. The origin a browser is sent
to is built from ``STREAMSPACE_SESSION_ORIGIN_TEMPLATE`` when set, else from the scheme and
port the browser used to reach the portal.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.signals import setting_changed
from django.http.request import split_domain_port

_SESSION_LABEL = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DEFAULT_PORTS = {"http": "80", "https": "443"}

_suffix: bytes | None = None  # b"." + the session domain, read once
# Host header -> session id (None: a portal host). Bounded: emptied when full.
_hosts: dict[bytes, uuid.UUID | None] = {}
_HOSTS_MAX = 10_000


def session_domain() -> str:
    return settings.STREAMSPACE_SESSION_DOMAIN


def _domain_suffix() -> bytes:
    global _suffix
    suffix = _suffix
    if suffix is None:
        suffix = _suffix = b"." + session_domain().encode("ascii")
    return suffix


def _forget(*, setting: str, **kwargs: object) -> None:
    global _suffix
    if setting in ("STREAMSPACE_SESSION_DOMAIN", "STREAMSPACE_SESSION_ORIGIN_TEMPLATE"):
        _suffix = None
        _hosts.clear()


setting_changed.connect(_forget)


def session_id_for_host(host: bytes) -> uuid.UUID | None:
    """The session whose origin ``host`` (a ``Host`` header value) is, or None for any other host."""
    try:
        return _hosts[host]
    except KeyError:
        pass
    name = host.lower()
    if name.count(b":") == 1:  # a port (an IPv6 literal is never a session host)
        name = name.split(b":", 1)[0]
    name = name.rstrip(b".")
    suffix = _domain_suffix()
    found = None
    if name.endswith(suffix):
        label = name[: -len(suffix)]
        if _SESSION_LABEL.fullmatch(label):
            found = uuid.UUID(label.decode("ascii"))
    if len(_hosts) >= _HOSTS_MAX:
        _hosts.clear()
    _hosts[host] = found
    return found


def host_header(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        if name == b"host":
            return value
    return b""


def scope_session_id(scope: dict) -> uuid.UUID | None:
    """The session a request addresses through its ``Host``, or None (a portal request)."""
    return session_id_for_host(host_header(scope.get("headers") or ()))


def is_session_origin(origin: str) -> bool:
    """Whether ``origin`` (an ``Origin`` header or URL) is some session's origin."""
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and session_id_for_host(netloc.encode("latin-1")) is not None


def session_origin(session_id: Any, *, scheme: str, host: str) -> str:
    """The origin of a session, for a browser that reached the portal at ``scheme://host``.

    ``STREAMSPACE_SESSION_ORIGIN_TEMPLATE`` wins when set; otherwise the session origin uses
    the same scheme and port as the portal (``http://<id>.localhost:8000`` under ``make run``).
    """
    template = settings.STREAMSPACE_SESSION_ORIGIN_TEMPLATE
    if template:
        return template.replace("{session_id}", str(session_id))
    scheme = "https" if scheme in ("https", "wss") else "http"
    _, port = split_domain_port(host)
    suffix = f":{port}" if port and port != _DEFAULT_PORTS[scheme] else ""
    return f"{scheme}://{session_id}.{session_domain()}{suffix}"


def portal_origin(scheme: str, host: str) -> str:
    """``scheme://host`` as an origin (the scheme normalised for WebSocket scopes)."""
    return f"{'https' if scheme in ('https', 'wss') else 'http'}://{host.lower()}"

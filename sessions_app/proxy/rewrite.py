"""Header handling between the browser and a session (pure functions, unit-tested as data).

Requests: hop-by-hop headers (RFC 9110 §7.6.1, plus whatever ``Connection`` names) are
dropped, the platform's credentials never leave the control plane (``Authorization``, the
Django session and CSRF cookies, the viewer cookie), client-supplied forwarding headers are
replaced by ours (``X-Forwarded-For/Proto/Host``, and ``X-Forwarded-Prefix`` on the portal's
prefix; on a session's own origin the session is served at ``/``).

Responses: hop-by-hop headers are dropped, ``Location`` and cookie paths are moved under the
session prefix (nothing to move on a session origin), cookies that would shadow the
platform's own are refused, and ``Domain`` is removed (a session's cookies stay on its own
host: never one its page could share with the portal or another session).
:func:`isolation_headers` keeps a session's content in its box: on its origin only the
portal may frame it; on the prefix (API clients) it is sandboxed should a browser render it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from django.conf import settings
from django.core.signals import setting_changed

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Replaced by the proxy or never forwarded.
_REQUEST_DROP = frozenset(
    {
        b"host",
        b"authorization",
        b"cookie",
        b"expect",  # the ASGI server already answered 100-continue to the client
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
    }
)
# Set by the WebSocket client library itself for the upstream handshake.
_WEBSOCKET_HANDSHAKE = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"origin",
        b"content-length",
    }
)

_HTTP_REQUEST_DROP = HOP_BY_HOP | _REQUEST_DROP
_WEBSOCKET_REQUEST_DROP = _HTTP_REQUEST_DROP | _WEBSOCKET_HANDSHAKE

VIEWER_COOKIE = "streamspace_viewer"


_platform_cookies: frozenset[str] | None = None


def platform_cookie_names() -> frozenset[str]:
    global _platform_cookies
    names = _platform_cookies
    if names is None:  # read once: two settings lookups per header pass add up on every request
        names = _platform_cookies = frozenset({settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME, VIEWER_COOKIE})
    return names


def _forget_platform_cookies(*, setting: str, **kwargs: object) -> None:
    global _platform_cookies
    if setting in ("SESSION_COOKIE_NAME", "CSRF_COOKIE_NAME"):
        _platform_cookies = None


setting_changed.connect(_forget_platform_cookies)


def filter_cookie_header(value: bytes, reserved: frozenset[str]) -> bytes:
    """The ``Cookie`` header without the platform's cookies (other pairs kept byte for byte)."""
    kept = []
    for pair in value.split(b";"):
        name = pair.split(b"=", 1)[0].strip().decode("latin-1")
        if name and name not in reserved:
            kept.append(pair.strip())
    return b"; ".join(kept)


def request_headers(
    headers: Iterable[tuple[bytes, bytes]],
    *,
    client_ip: str,
    scheme: str,
    prefix: str,
    websocket: bool = False,
    authorization: bytes | None = None,
) -> tuple[Headers, bytes]:
    """Headers to send upstream, and the original ``Host`` (for ``X-Forwarded-Host``).

    ``authorization``: the session's own credentials (``stream_auth.upstream_authorization``),
    the only ``Authorization`` that reaches it; the client's is always dropped.
    """
    drop = _WEBSOCKET_REQUEST_DROP if websocket else _HTTP_REQUEST_DROP
    out: Headers = []
    host = b""
    cookies = []
    named: set[bytes] = set()  # headers the client's Connection header names as hop-by-hop
    for name, value in headers:
        lname = name.lower()
        if lname in drop:
            if lname == b"host":
                host = value
            elif lname == b"cookie":
                filtered = filter_cookie_header(value, platform_cookie_names())
                if filtered:
                    cookies.append(filtered)
            elif lname == b"connection":
                named.update(t.strip().lower() for t in value.split(b",") if t.strip())
            continue
        out.append((lname, value))
    if named:
        out = [(name, value) for name, value in out if name not in named]
    if cookies:
        out.append((b"cookie", b"; ".join(cookies)))
    out.append((b"x-forwarded-for", client_ip.encode("ascii", "replace")))
    out.append((b"x-forwarded-proto", b"https" if scheme in ("https", "wss") else b"http"))
    if host:
        out.append((b"x-forwarded-host", host))
    if prefix:
        out.append((b"x-forwarded-prefix", prefix.encode("ascii")))
    if authorization:
        out.append((b"authorization", authorization))
    return out, host


def rewrite_location(value: str, *, prefix: str, upstream_hosts: frozenset[str]) -> str:
    """Move a redirect target under the session prefix when it points into the session."""
    if value.startswith("/") and not value.startswith("//"):
        return prefix + value
    if "\r" in value or "\n" in value:
        return prefix + "/"
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if parts.netloc and parts.netloc.lower() in upstream_hosts:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        if parts.fragment:
            target += "#" + parts.fragment
        return prefix + target
    return value


def rewrite_set_cookie(value: str, *, prefix: str, reserved: frozenset[str]) -> str | None:
    """The cookie with its ``Path`` under the prefix and no ``Domain``; None to drop it."""
    parts = value.split(";")
    name = parts[0].split("=", 1)[0].strip()
    if not name or name in reserved:
        return None
    out = [parts[0].strip()]
    for attribute in parts[1:]:
        key, _, val = attribute.strip().partition("=")
        lkey = key.strip().lower()
        if lkey == "domain":
            continue
        if lkey == "path":
            path = val.strip()
            if not path.startswith("/"):
                path = "/"
            out.append(f"Path={prefix}{path}")
            continue
        if attribute.strip():
            out.append(attribute.strip())
    return "; ".join(out)


def response_headers(headers: Iterable[tuple[bytes, bytes]], *, prefix: str, upstream_hosts: frozenset[str]) -> Headers:
    """Headers to send to the browser for an upstream response."""
    out: Headers = []
    named: set[bytes] = set()  # headers the session's Connection header names as hop-by-hop
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"connection":
                named.update(t.strip().lower() for t in value.split(b",") if t.strip())
            continue
        if lname in (b"location", b"content-location"):
            text = value.decode("latin-1")
            value = rewrite_location(text, prefix=prefix, upstream_hosts=upstream_hosts).encode("latin-1")
        elif lname == b"set-cookie":
            rewritten = rewrite_set_cookie(value.decode("latin-1"), prefix=prefix, reserved=platform_cookie_names())
            if rewritten is None:
                continue
            value = rewritten.encode("latin-1")
        out.append((lname, value))
    if named:
        out = [(name, value) for name, value in out if name not in named]
    return out


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def cookie_values(headers: Iterable[tuple[bytes, bytes]], name: str) -> list[str]:
    """Every value of cookie ``name`` in a request, in the order sent."""
    values = []
    for key, value in headers:
        if key.lower() != b"cookie":
            continue
        for pair in value.decode("latin-1").split(";"):
            key_, eq, val = pair.strip().partition("=")
            if eq and key_ == name:
                values.append(val.strip().strip('"'))
    return values


# Characters of an origin (scheme, host, port): anything else is refused in a header.
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_SANDBOXED = ((b"content-security-policy", b"sandbox; frame-ancestors 'none'"),)


@functools.lru_cache(maxsize=256)
def isolation_headers(*, on_session_host: bool, portal_origin: str) -> tuple[tuple[bytes, bytes], ...]:
    """Response headers that keep a session's content away from the portal.

    On the session's origin: ``frame-ancestors`` names only the portal origin that issued the
    viewer token (none when unknown), so no other page can frame the session. On the portal's
    prefix: ``sandbox``, so that a response a browser renders there runs in an opaque origin,
    never the portal's.
    """
    if not on_session_host:
        return _SANDBOXED
    ancestors = portal_origin if _ORIGIN.fullmatch(portal_origin) else "'none'"
    return ((b"content-security-policy", f"frame-ancestors {ancestors}".encode("ascii")),)


def parse_cookies(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Cookies of a request (the first occurrence of a name wins)."""
    cookies: dict[str, str] = {}
    for key, value in headers:
        if key.lower() != b"cookie":
            continue
        for pair in value.decode("latin-1").split(";"):
            name, eq, val = pair.strip().partition("=")
            if eq and name and name not in cookies:
                cookies[name] = val.strip().strip('"')
    return cookies

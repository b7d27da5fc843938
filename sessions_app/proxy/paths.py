"""Parsing and validating proxy requests: on a session's own origin
(``<session-id>.<STREAMSPACE_SESSION_DOMAIN>``, :mod:`.origins`) the whole path is the
session's; on the portal's origin ``/api/v1/http/<session-id>/<rest>`` (API clients).

The forwarded path is sent byte for byte (``raw_path``), never normalised, so what the
session receives is what the client sent. Paths that try to climb out of the prefix
(``..`` and ``.`` segments, also percent-encoded or hidden behind encoded slashes and
backslashes), control characters and NUL bytes are refused with 400 before anything is
forwarded. The upstream host comes only from the session row, never from the request.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from sessions_app.proxy.origins import scope_session_id

PREFIX = "/api/v1/http/"
PREFIX_BYTES = PREFIX.encode()
# Served by the proxy itself (the waking page polls it); shadows the same path upstream.
STATUS_PATH = b"/.streamspace/status"
# Where the Selkies client asks its server for WebRTC ICE servers: answered by the proxy with
# the viewer's own TURN credentials when the site names a TURN server (§24), else forwarded.
TURN_PATH = b"/api/turn"
TOKEN_PARAM = b"token"
SHARE_PARAM = b"share"  # a share link's key (sessions_app.sharing), read on a session's origin
# The canonical (lowercase, hyphenated) form only: one URL per session, one cookie path.
_SESSION_ID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Controls, spaces and non-ASCII must arrive percent-encoded in a path or query.
_UNSAFE_BYTE = re.compile(rb"[\x00-\x20\x7f-\xff]")


class BadPath(Exception):
    """A path or query the proxy refuses; ``status`` is 400 or 404."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclass(frozen=True)
class ProxyPath:
    session_id: uuid.UUID
    upstream_path: bytes  # raw (still percent-encoded), always starts with b"/"
    query: bytes  # raw query string without the viewer token
    token: str | None  # value of ``?token=`` if present
    share: str | None = None  # value of ``?share=`` (a share link's key) if present
    needs_slash: bool = False  # ``/api/v1/http/<id>`` without the trailing slash
    # The public prefix without the trailing slash (``X-Forwarded-Prefix``); "" on a session origin.
    prefix: str = field(default="", compare=False)
    # Addressed to the session's own origin (the browser's way in), not the portal's prefix.
    on_session_host: bool = False

    def __post_init__(self) -> None:
        if not self.prefix and not self.on_session_host:
            object.__setattr__(self, "prefix", f"{PREFIX}{self.session_id}")

    @property
    def cookie_path(self) -> str:
        return f"{self.prefix}/"

    @property
    def is_turn(self) -> bool:
        return self.upstream_path == TURN_PATH

    @property
    def is_status(self) -> bool:
        return self.upstream_path == STATUS_PATH

    def public_url(self, *, with_query: bool = True) -> str:
        """The path the browser sees (without the token)."""
        url = self.prefix + self.upstream_path.decode("ascii")
        if with_query and self.query:
            url += "?" + self.query.decode("ascii")
        return url

    def upstream_target_bytes(self) -> bytes:
        """The request target sent upstream: path plus query, still encoded."""
        return self.upstream_path + b"?" + self.query if self.query else self.upstream_path

    def upstream_target(self) -> str:
        return self.upstream_target_bytes().decode("ascii")


def _check_segments(rest: bytes) -> None:
    if _UNSAFE_BYTE.search(rest):
        raise BadPath(400, "bad_path", "The path contains characters that must be percent-encoded.")
    if b"%" not in rest and b"/." not in rest:
        return  # nothing encoded and no dot segment: the common case
    for segment in rest.split(b"/"):
        if b"%" not in segment and segment not in (b".", b".."):
            continue
        decoded = unquote_to_bytes(segment)
        if any(b < 0x20 or b == 0x7F for b in decoded):
            raise BadPath(400, "bad_path", "The path contains encoded control characters.")
        # A second round catches double encoding (%252e%252e) that a naive upstream might decode.
        for candidate in (decoded, unquote_to_bytes(decoded)):
            for part in candidate.replace(b"\\", b"/").split(b"/"):
                if part in (b".", b".."):
                    raise BadPath(400, "bad_path", "Dot segments are not allowed in proxied paths.")


def _split_query(query: bytes) -> tuple[bytes, str | None, str | None]:
    """The query without the platform's credentials, the viewer token and the share link key."""
    if not query:
        return b"", None, None
    found: dict[bytes, str] = {}
    kept = []
    for pair in query.split(b"&"):
        name = unquote_to_bytes(pair.split(b"=", 1)[0])
        if name in (TOKEN_PARAM, SHARE_PARAM):
            value = pair.split(b"=", 1)[1] if b"=" in pair else b""
            found[name] = unquote_to_bytes(value).decode("utf-8", "replace")
            continue
        kept.append(pair)
    if _UNSAFE_BYTE.search(query):
        raise BadPath(400, "bad_query", "The query string contains control characters, spaces or non-ASCII bytes.")
    return b"&".join(p for p in kept if p), found.get(TOKEN_PARAM), found.get(SHARE_PARAM)


# Canonical id bytes -> (UUID, public prefix): building a UUID costs more than the rest of
# the parse. Bounded (emptied when full): ids are cached before anyone is authorized.
_session_ids: dict[bytes, tuple[uuid.UUID, str]] = {}
_SESSION_IDS_MAX = 10_000


def parse(scope: dict) -> ProxyPath:
    """The session id, forwarded path and query of a proxy request, or ``BadPath``."""
    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    on_host = scope_session_id(scope)
    if on_host is not None:
        if not raw.startswith(b"/"):  # an absolute-form target: the path alone is forwarded
            raise BadPath(400, "bad_path", "The request target must be a path.")
        _check_segments(raw)
        query, token, share = _split_query(scope.get("query_string") or b"")
        return ProxyPath(
            session_id=on_host, upstream_path=raw, query=query, token=token, share=share, on_session_host=True
        )
    if not raw.startswith(PREFIX_BYTES):
        raise BadPath(404, "not_found", "Not a session proxy path.")
    remainder = raw[len(PREFIX_BYTES) :]
    raw_id, slash, rest = remainder.partition(b"/")
    if not _SESSION_ID.fullmatch(raw_id):
        raise BadPath(404, "not_found", "No such session.")
    rest = b"/" + rest
    _check_segments(rest)
    query, token, _ = _split_query(scope.get("query_string") or b"")  # a link counts on the session origin only
    known = _session_ids.get(raw_id)
    if known is None:
        if len(_session_ids) >= _SESSION_IDS_MAX:
            _session_ids.clear()
        text_id = raw_id.decode("ascii")
        known = _session_ids[raw_id] = (uuid.UUID(text_id), PREFIX + text_id)
    return ProxyPath(
        session_id=known[0],
        upstream_path=rest,
        query=query,
        token=token,
        needs_slash=not slash,
        prefix=known[1],
    )

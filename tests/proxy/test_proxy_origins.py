"""Per-session origins as data: which hosts are sessions', the origins browsers are sent to,
the settings that configure them, the WebSocket ``Origin`` rules on both ways in, and the
system checks that refuse settings extending the portal's trust to session origins."""

from __future__ import annotations

import uuid

import pytest

from sessions_app.checks import session_origin_isolation_check
from sessions_app.proxy import origin_allowed
from sessions_app.proxy.origins import is_session_origin, session_id_for_host, session_origin
from sessions_app.proxy.paths import BadPath, parse
from sessions_app.proxy.rewrite import isolation_headers
from streamspace.env import ConfigError
from streamspace.settings import _session_origins

SID = uuid.UUID("0b5a1c3e-7f00-4d6a-9e55-2f1d0c8b9a77")


@pytest.mark.parametrize(
    "host, expected",
    [
        (f"{SID}.localhost", SID),
        (f"{SID}.localhost:8000", SID),
        (f"{SID}.LOCALHOST:8000", SID),  # host names are case-insensitive
        (f"{str(SID).upper()}.localhost", SID),
        (f"{SID}.localhost.", SID),
        ("localhost:8000", None),  # the portal
        ("127.0.0.1:8000", None),
        ("[::1]:8000", None),
        (f"x.{SID}.localhost", None),
        (f"{SID}.localhost.evil.example", None),
        (f"{SID}localhost", None),
        (f"{str(SID).replace('-', '')}.localhost", None),  # only the canonical form
        ("not-a-session.localhost", None),
        ("", None),
    ],
)
def test_session_hosts(host, expected):
    assert session_id_for_host(host.encode()) == expected


def test_session_hosts_follow_the_domain(settings):
    settings.STREAMSPACE_SESSION_DOMAIN = "sessions.example.com"
    assert session_id_for_host(f"{SID}.sessions.example.com".encode()) == SID
    assert session_id_for_host(f"{SID}.localhost".encode()) is None
    assert session_id_for_host(f"{SID}.example.com".encode()) is None
    assert is_session_origin(f"https://{SID}.sessions.example.com")
    assert not is_session_origin("https://streamspace.example.com")


def test_origins_follow_the_portal_scheme_and_port(settings):
    assert session_origin(SID, scheme="http", host="localhost:8000") == f"http://{SID}.localhost:8000"
    assert session_origin(SID, scheme="http", host="127.0.0.1:8000") == f"http://{SID}.localhost:8000"
    assert session_origin(SID, scheme="https", host="portal.example.com") == f"https://{SID}.localhost"
    assert session_origin(SID, scheme="https", host="portal.example.com:443") == f"https://{SID}.localhost"
    assert session_origin(SID, scheme="wss", host="portal.example.com:8443") == f"https://{SID}.localhost:8443"
    settings.STREAMSPACE_SESSION_DOMAIN = "sessions.example.com"
    settings.STREAMSPACE_SESSION_ORIGIN_TEMPLATE = "https://{session_id}.sessions.example.com:9443"
    assert session_origin(SID, scheme="http", host="localhost:8000") == f"https://{SID}.sessions.example.com:9443"


def test_origin_settings_are_checked():
    assert _session_origins("", "") == ("localhost", "")
    assert _session_origins(".Sessions.Example.com.", "") == ("sessions.example.com", "")
    template = "https://{session_id}.sessions.example.com:8443"
    assert _session_origins("", template + "/") == ("sessions.example.com", template)
    assert _session_origins("sessions.example.com", template) == ("sessions.example.com", template)
    for domain, bad in [
        ("", "https://sessions.example.com"),  # no {session_id}
        ("", "ftp://{session_id}.example.com"),
        ("", "https://{session_id}.example.com/path"),
        ("", "https://{session_id}.example.com:port"),
        ("other.example.com", template),  # disagrees with the domain
        ("https://sessions.example.com", ""),
        ("sessions.example.com:8000", ""),
    ]:
        with pytest.raises(ConfigError):
            _session_origins(domain, bad)


def scope(host: str, path: str, origin: str | None = None) -> dict:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"path": path, "raw_path": path.encode(), "query_string": b"", "headers": headers}


def test_parse_on_a_session_origin_takes_the_whole_path():
    path = parse({**scope(f"{SID}.localhost:8000", "/api/v1/http/x/y"), "query_string": b"a=1&token=t"})
    assert path.on_session_host and path.session_id == SID
    assert path.upstream_path == b"/api/v1/http/x/y" and path.query == b"a=1" and path.token == "t"
    assert path.prefix == "" and path.cookie_path == "/" and path.public_url() == "/api/v1/http/x/y?a=1"
    with pytest.raises(BadPath):
        parse(scope(f"{SID}.localhost", "/a/%2e%2e/b"))
    on_prefix = parse(scope("localhost:8000", f"/api/v1/http/{SID}/y"))
    assert not on_prefix.on_session_host and on_prefix.prefix == f"/api/v1/http/{SID}"


@pytest.mark.parametrize(
    "host, path, origin, allowed",
    [
        # A session's origin: its own pages only.
        (f"{SID}.localhost:8000", "/ws", f"http://{SID}.localhost:8000", True),
        (f"{SID}.localhost:8000", "/ws", None, True),  # not a browser
        (f"{SID}.localhost:8000", "/ws", "http://localhost:8000", False),  # the portal's page
        (f"{SID}.localhost:8000", "/ws", f"http://{uuid.uuid4()}.localhost:8000", False),  # another session
        (f"{SID}.localhost:8000", "/ws", "http://evil.example", False),
        # The portal's prefix: the portal's hosts, never a session's origin.
        ("localhost:8000", f"/api/v1/http/{SID}/ws", "http://localhost:8000", True),
        ("localhost:8000", f"/api/v1/http/{SID}/ws", f"http://{SID}.localhost:8000", False),
        ("localhost:8000", f"/api/v1/http/{SID}/ws", "http://evil.example", False),
    ],
)
def test_websocket_origins(host, path, origin, allowed, settings):
    settings.ALLOWED_HOSTS = ["localhost", ".localhost"]  # even a wildcard covering the sessions
    assert origin_allowed(scope(host, path, origin)) is allowed


def test_isolation_headers():
    assert isolation_headers(on_session_host=False, portal_origin="") == (
        (b"content-security-policy", b"sandbox; frame-ancestors 'none'"),
    )
    assert isolation_headers(on_session_host=True, portal_origin="https://portal.example.com:8443") == (
        (b"content-security-policy", b"frame-ancestors https://portal.example.com:8443"),
    )
    for bad in ("", "*", "https://a.example; script-src *", "javascript:x", "https://a.example/path"):
        assert isolation_headers(on_session_host=True, portal_origin=bad) == (
            (b"content-security-policy", b"frame-ancestors 'none'"),
        ), bad


def test_checks_refuse_settings_that_trust_session_origins(settings):
    settings.STREAMSPACE_SESSION_DOMAIN = "sessions.example.com"
    settings.CSRF_TRUSTED_ORIGINS = ["https://streamspace.example.com"]
    settings.CORS_ALLOWED_ORIGINS = ["https://tools.example.com"]
    assert session_origin_isolation_check() == []
    settings.SESSION_COOKIE_DOMAIN = ".example.com"
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.com"]
    settings.CORS_ALLOWED_ORIGIN_REGEXES = [r"^https://.*\.sessions\.example\.com$"]
    assert {error.id for error in session_origin_isolation_check()} == {
        "streamspace.E101",
        "streamspace.E102",
        "streamspace.E103",
    }
    settings.SESSION_COOKIE_DOMAIN = "streamspace.example.com"  # the portal's own host: fine
    settings.CSRF_TRUSTED_ORIGINS = [f"https://{SID}.sessions.example.com"]
    settings.CORS_ALLOWED_ORIGIN_REGEXES = []
    settings.CORS_ALLOW_ALL_ORIGINS = True
    assert {error.id for error in session_origin_isolation_check()} == {"streamspace.E102", "streamspace.E103"}

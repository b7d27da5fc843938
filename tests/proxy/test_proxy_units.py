"""Pure parts of the proxy: path parsing and its hostile-input checks, header rewriting,
the Origin check. The same hostile inputs run against a real daphne in test_proxy_daphne."""

from __future__ import annotations

import uuid

import pytest

from sessions_app.proxy import origin_allowed
from sessions_app.proxy.paths import BadPath, parse
from sessions_app.proxy.rewrite import (
    filter_cookie_header,
    request_headers,
    response_headers,
    rewrite_location,
    rewrite_set_cookie,
)

SID = uuid.UUID("0b7d2c55-51f1-4b5c-9b7e-1a2b3c4d5e6f")
PREFIX = f"/api/v1/http/{SID}"


def scope(raw_path: str, query: str = "") -> dict:
    return {"path": raw_path, "raw_path": raw_path.encode(), "query_string": query.encode()}


def test_parse_keeps_the_rest_of_the_path_and_strips_the_token():
    parsed = parse(scope(f"{PREFIX}/a%20b/c/", "x=1&token=abc%3D&y=%2F"))
    assert parsed.session_id == SID
    assert parsed.upstream_path == b"/a%20b/c/"
    assert parsed.query == b"x=1&y=%2F"
    assert parsed.token == "abc="
    assert parsed.upstream_target() == "/a%20b/c/?x=1&y=%2F"
    assert parsed.public_url() == f"{PREFIX}/a%20b/c/?x=1&y=%2F"
    assert parse(scope(PREFIX)).needs_slash
    assert parse(scope(f"{PREFIX}/.streamspace/status")).is_status


@pytest.mark.parametrize(
    "rest",
    [
        "/../x",
        "/a/./b",
        "/%2e%2e/x",
        "/%2E%2e%2Fx",
        "/a/..%2f..%2fb",
        "/a/%252e%252e/b",
        "/a/%5c..%5cb",
        "/a/%00",
        "/a/%0d%0aInjected:%201",
        "/a\x7f",
    ],
)
def test_hostile_paths_are_bad_requests(rest):
    with pytest.raises(BadPath) as refused:
        parse(scope(PREFIX + rest))
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "raw",
    [
        "/api/v1/http/not-a-uuid/",
        f"/api/v1/http/{str(SID).upper()}/",
        f"/api/v1/http/{SID.hex}/",
        f"/api/v1/http/{{{SID}}}/",
        "/api/v1/http/",
    ],
)
def test_non_canonical_ids_are_404(raw):
    with pytest.raises(BadPath) as refused:
        parse(scope(raw))
    assert refused.value.status == 404


@pytest.mark.parametrize("query", [b"a=\r\n", b"a=b c", b"a=\xc3\xa9", b"\x00"])
def test_query_control_characters_spaces_and_raw_non_ascii_refused(query):
    # Raw bytes that would break the upstream request line or its ASCII decoding.
    with pytest.raises(BadPath) as refused:
        parse({"path": f"{PREFIX}/", "raw_path": f"{PREFIX}/".encode(), "query_string": query})
    assert refused.value.status == 400


def test_request_headers_drop_credentials_and_hop_by_hop(settings):
    headers = [
        (b"host", b"cp.example"),
        (b"authorization", b"Bearer x"),
        (b"cookie", b"sessionid=1; csrftoken=2; streamspace_viewer=3; app=4"),
        (b"connection", b"keep-alive, X-Secret"),
        (b"x-secret", b"s"),
        (b"keep-alive", b"timeout=5"),
        (b"te", b"trailers"),
        (b"x-forwarded-for", b"6.6.6.6"),
        (b"accept", b"*/*"),
    ]
    out, host = request_headers(headers, client_ip="10.0.0.1", scheme="https", prefix=PREFIX)
    names = [k for k, _ in out]
    assert host == b"cp.example"
    assert b"authorization" not in names and b"x-secret" not in names and b"te" not in names
    assert (b"cookie", b"app=4") in out
    assert (b"x-forwarded-for", b"10.0.0.1") in out and (b"x-forwarded-proto", b"https") in out
    assert (b"x-forwarded-host", b"cp.example") in out and (b"x-forwarded-prefix", PREFIX.encode()) in out
    assert names.count(b"x-forwarded-for") == 1
    ws, _ = request_headers(
        [(b"sec-websocket-key", b"k"), (b"origin", b"http://a")],
        client_ip="",
        scheme="ws",
        prefix=PREFIX,
        websocket=True,
    )
    assert {k for k, _ in ws} == {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-prefix"}


def test_cookie_filter_keeps_other_pairs_verbatim():
    assert filter_cookie_header(b'a=1; sessionid=x;b="q r"', frozenset({"sessionid"})) == b'a=1; b="q r"'
    assert filter_cookie_header(b"sessionid=x", frozenset({"sessionid"})) == b""


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/login?next=/", f"{PREFIX}/login?next=/"),
        ("http://127.0.0.1:8080/a?b#c", f"{PREFIX}/a?b#c"),
        ("http://localhost:8080", f"{PREFIX}/"),
        ("//127.0.0.1:8080/x", f"{PREFIX}/x"),
        ("https://example.org/", "https://example.org/"),
        ("//evil.example/x", "//evil.example/x"),
        ("relative/path", "relative/path"),
    ],
)
def test_location_rewrite(location, expected):
    hosts = frozenset({"127.0.0.1:8080", "localhost:8080"})
    assert rewrite_location(location, prefix=PREFIX, upstream_hosts=hosts) == expected


def test_set_cookie_rewrite():
    reserved = frozenset({"sessionid", "streamspace_viewer"})
    assert rewrite_set_cookie("a=1; Path=/; Domain=x.test; Secure", prefix=PREFIX, reserved=reserved) == (
        f"a=1; Path={PREFIX}/; Secure"
    )
    assert rewrite_set_cookie("a=1; path=/sub", prefix=PREFIX, reserved=reserved) == f"a=1; Path={PREFIX}/sub"
    assert rewrite_set_cookie("a=1", prefix=PREFIX, reserved=reserved) == "a=1"
    assert rewrite_set_cookie("sessionid=evil; Path=/", prefix=PREFIX, reserved=reserved) is None


def test_response_headers():
    out = response_headers(
        [
            (b"Transfer-Encoding", b"chunked"),
            (b"Connection", b"close, X-Internal"),
            (b"X-Internal", b"1"),
            (b"Location", b"/next"),
            (b"Set-Cookie", b"streamspace_viewer=evil"),
            (b"Content-Type", b"text/html"),
        ],
        prefix=PREFIX,
        upstream_hosts=frozenset(),
    )
    assert out == [(b"location", f"{PREFIX}/next".encode()), (b"content-type", b"text/html")]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        (b"http://127.0.0.1:8000", True),
        (b"http://localhost", True),
        (b"http://evil.example", False),
        (b"null", False),
        (b"http://cp.example:8443", True),
    ],
)
def test_origin_check(origin, allowed):
    headers = [(b"host", b"cp.example:8443")]
    if origin is not None:
        headers.append((b"origin", origin))
    assert origin_allowed({"headers": headers}) is allowed


def test_accept_key_is_rfc_6455s():
    from agents_app.agent_socket import accept_key

    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3


async def test_a_pending_tunnel_is_claimed_once():
    import socket

    from agents_app import tunnels as tunnel

    ours, theirs = socket.socketpair()
    entry = tunnel._Pending(agent_pk=7, sock=theirs)
    tunnel._pending["s1"] = entry
    try:
        assert tunnel.pending("s1") is entry and tunnel.pending("other") is None
        assert tunnel.claim("s1", entry)
        assert not tunnel.claim("s1", entry)  # a second socket for the same stream
        assert tunnel.pending("s1") is None
        tunnel._pending["s2"] = done = tunnel._Pending(agent_pk=7, sock=theirs)
        done.connected.set_result(True)  # connected through daphne's endpoint already
        assert tunnel.pending("s2") is None and not tunnel.claim("s2", done)
    finally:
        tunnel._pending.pop("s1", None)
        tunnel._pending.pop("s2", None)
        ours.close()
        theirs.close()

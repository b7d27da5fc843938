"""The client address behind trusted proxies (``streamspace.api.client_ip``), and its users:
the lockout, audit records, API tokens' ``last_used_ip`` and daphne under ``streamspace.serve``."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient
from twisted.web.http_headers import Headers

from streamspace.accounts.models import ApiToken
from streamspace.accounts.tokens import create_token
from streamspace.api.client_ip import forwarded_address, parse_trusted_proxies, request_ip, resolve, scope_ip
from streamspace.audit.models import AuditEvent
from streamspace.env import ConfigError

PROXIES = parse_trusted_proxies(["10.0.0.0/24", "2001:db8::1", "127.0.0.1"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # no trusted peer: the header is the client's own words
        ("192.0.2.1", ["6.6.6.6"], "192.0.2.1"),
        # through one trusted proxy: the address it appended
        ("10.0.0.5", ["6.6.6.6, 198.51.100.7"], "198.51.100.7"),
        # a chain of trusted proxies: the rightmost untrusted address
        ("10.0.0.5", ["6.6.6.6, 198.51.100.7, 10.0.0.9"], "198.51.100.7"),
        # several header lines (HAProxy adds its own): all count, in order
        ("10.0.0.5", ["6.6.6.6", "198.51.100.7"], "198.51.100.7"),
        # a client trying to look like a trusted proxy gains nothing
        ("10.0.0.5", ["10.0.0.1, 198.51.100.7"], "198.51.100.7"),
        # garbage stops the walk at the nearest trusted hop
        ("10.0.0.5", ["198.51.100.7, not-an-ip"], "10.0.0.5"),
        ("10.0.0.5", ["unknown, 10.0.0.9"], "10.0.0.9"),
        # everything trusted: the leftmost known hop
        ("10.0.0.5", ["10.0.0.7, 10.0.0.9"], "10.0.0.7"),
        # no header from a trusted proxy: the proxy itself
        ("10.0.0.5", [], "10.0.0.5"),
        # ports and brackets as some proxies write them; IPv6; IPv4-mapped peers
        ("10.0.0.5", ["198.51.100.7:4711"], "198.51.100.7"),
        ("2001:db8::1", ["[2001:db8::42]:443"], "2001:db8::42"),
        ("::ffff:10.0.0.5", ["198.51.100.7"], "198.51.100.7"),
        (None, ["198.51.100.7"], None),
    ],
)
def test_rightmost_untrusted_address_wins(peer, forwarded, client):
    assert resolve(peer, forwarded, PROXIES) == client
    # idempotent: an address resolved at the server's edge resolves to itself in Django
    if client is not None:
        assert resolve(client, forwarded, PROXIES) == client


def test_no_trusted_proxies_means_the_peer():
    assert resolve("10.0.0.5", ["198.51.100.7"], ()) == "10.0.0.5"


def test_bad_configuration_fails_loudly():
    with pytest.raises(ConfigError, match="not-an-address"):
        parse_trusted_proxies(["10.0.0.1", "not-an-address"])
    assert [str(n) for n in parse_trusted_proxies([" 10.1.2.3 ", "10.2.0.0/16"])] == ["10.1.2.3/32", "10.2.0.0/16"]


def test_daphne_contract_for_every_header_shape(settings):
    settings.STREAMSPACE_TRUSTED_PROXIES = PROXIES
    twisted = Headers({b"X-Forwarded-For": [b"6.6.6.6", b"198.51.100.7"], b"X-Forwarded-Proto": [b"https"]})
    as_dict = {b"x-forwarded-for": b"6.6.6.6, 198.51.100.7", b"x-forwarded-proto": b"https"}
    as_list = [
        (b"x-forwarded-for", b"6.6.6.6"),
        (b"x-forwarded-for", b"198.51.100.7"),
        (b"x-forwarded-proto", b"https"),
    ]
    for headers in (twisted, as_dict, as_list):
        assert forwarded_address(headers, "X-Forwarded-For", None, "X-Forwarded-Proto", ["10.0.0.5", 5000], "http") == (
            ["198.51.100.7", 0],
            "https",
        )
        # from an untrusted peer nothing is believed, not even the scheme
        untrusted = forwarded_address(
            headers, "X-Forwarded-For", None, "X-Forwarded-Proto", ["192.0.2.1", 5000], "http"
        )
        assert untrusted == (["192.0.2.1", 5000], "http")
    odd_scheme = {b"x-forwarded-for": b"198.51.100.7", b"x-forwarded-proto": b"gopher"}
    assert (
        forwarded_address(odd_scheme, "X-Forwarded-For", None, "X-Forwarded-Proto", ["10.0.0.5", 1], "http")[1]
        == "http"
    )


def test_scope_and_request_helpers(settings, rf):
    settings.STREAMSPACE_TRUSTED_PROXIES = PROXIES
    scope = {"client": ("10.0.0.5", 1234), "headers": [(b"x-forwarded-for", b"6.6.6.6, 198.51.100.7")]}
    assert scope_ip(scope) == "198.51.100.7"
    assert scope_ip({"client": ("192.0.2.1", 1), "headers": scope["headers"]}) == "192.0.2.1"
    assert scope_ip({}) == ""
    request = rf.get("/", REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.7")
    assert request_ip(request) == "198.51.100.7"
    assert request_ip(None) is None


@pytest.mark.django_db
def test_audit_lockout_and_token_use_record_the_resolved_address(settings, alice):
    """Behind a trusted proxy, the client's address (not the proxy's, not the spoofed one)."""
    settings.STREAMSPACE_TRUSTED_PROXIES = PROXIES
    via_proxy = {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 198.51.100.7"}
    client = APIClient()
    assert client.post("/api/v1/auth/login", {"username": "alice", "password": "nope"}, format="json", **via_proxy)
    assert AuditEvent.objects.get(action="user.login_failed").ip == "198.51.100.7"

    _, key = create_token(alice, name="ci", scope="read")
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/users/me", **via_proxy).status_code == 200
    assert ApiToken.objects.get(name="ci").last_used_ip == "198.51.100.7"

    # axes counts per (name, resolved address): the proxy's other clients are not locked out
    settings.LOGIN_BACKOFF_FREE_FAILURES = 10_000
    for i in range(settings.AXES_FAILURE_LIMIT):
        APIClient().post("/api/v1/auth/login", {"username": "alice", "password": f"x{i}"}, format="json", **via_proxy)
    locked = APIClient().post(
        "/api/v1/auth/login", {"username": "alice", "password": "pw-alice"}, format="json", **via_proxy
    )
    assert locked.status_code == 429
    other = {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "198.51.100.8"}
    assert (
        APIClient()
        .post("/api/v1/auth/login", {"username": "alice", "password": "pw-alice"}, format="json", **other)
        .status_code
        == 200
    )


def test_serve_makes_daphne_use_the_rule(settings):
    """Under streamspace.serve daphne's protocols resolve the client with the same rule,
    whether or not --proxy-headers was given."""
    import daphne.http_protocol
    import daphne.ws_protocol

    from streamspace import serve

    class FakeServer:
        proxy_forwarded_address_header = None
        proxy_forwarded_port_header = "X-Forwarded-Port"
        proxy_forwarded_proto_header = None

    saved = daphne.http_protocol.parse_x_forwarded_for, daphne.ws_protocol.parse_x_forwarded_for
    try:
        server = FakeServer()
        serve.install_client_address(server)
        assert daphne.http_protocol.parse_x_forwarded_for is forwarded_address
        assert daphne.ws_protocol.parse_x_forwarded_for is forwarded_address
        assert (server.proxy_forwarded_address_header, server.proxy_forwarded_port_header) == ("X-Forwarded-For", None)
        assert server.proxy_forwarded_proto_header == "X-Forwarded-Proto"
    finally:
        daphne.http_protocol.parse_x_forwarded_for, daphne.ws_protocol.parse_x_forwarded_for = saved

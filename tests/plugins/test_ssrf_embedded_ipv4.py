"""The webhook guard sees through IPv6 addresses that carry an internal IPv4 address."""

from __future__ import annotations

import ipaddress

import pytest

from plugins_app import http
from streamspace.transport import addresses

# Every one of these reaches (through a relay, a translator or the local stack) an address
# the guard refuses in its IPv4 form: metadata, loopback, private, link-local.
WRAPPED_INTERNAL = [
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:c0a8:101::",  # 6to4 of 192.168.1.1
    "2001:0:a9fe:a9fe::1",  # Teredo, server 169.254.169.254
    "2001:0:808:808:0:ffff:f5ff:fffe",  # Teredo, public server, client 10.0.0.1 (obfuscated)
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b:1::a00:1",  # local-use NAT64 of 10.0.0.1
    "::ffff:169.254.169.254",  # IPv4-mapped
    "::ffff:0:a9fe:a9fe",  # IPv4-translated
    "::169.254.169.254",  # IPv4-compatible
    "::10.0.0.1",
    "fd00:ec2::254",  # AWS's IPv6 metadata address
]


@pytest.mark.parametrize("address", WRAPPED_INTERNAL)
def test_wrapped_internal_addresses_are_refused(address, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = []
    with pytest.raises(http.OutboundURLError, match="loopback, private or link-local"):
        http.validate_url(f"http://[{address}]/hook")


@pytest.mark.parametrize("address", WRAPPED_INTERNAL)
def test_a_name_resolving_to_a_wrapped_address_is_refused(address, settings, monkeypatch):
    settings.WEBHOOK_ALLOWED_HOSTS = []
    monkeypatch.setattr(http, "resolve", lambda host, port: [ipaddress.ip_address(address)])
    with pytest.raises(http.OutboundURLError):
        http.validate_url("https://hooks.example.com/x")


def test_embedded_addresses_are_found():
    embedded = {a: [str(v4) for v4 in addresses.embedded_ipv4(ipaddress.ip_address(a))] for a in WRAPPED_INTERNAL}
    assert embedded["2002:a9fe:a9fe::1"] == ["169.254.169.254"]
    assert embedded["2001:0:808:808:0:ffff:f5ff:fffe"] == ["8.8.8.8", "10.0.0.1"]
    assert embedded["64:ff9b:1::a00:1"] == ["10.0.0.1"]
    assert embedded["::169.254.169.254"] == ["169.254.169.254"]
    assert embedded["fd00:ec2::254"] == []
    assert addresses.embedded_ipv4(ipaddress.ip_address("::1")) == []
    assert addresses.embedded_ipv4(ipaddress.ip_address("2606:4700::1111")) == []


def test_public_addresses_still_pass(settings, monkeypatch):
    settings.WEBHOOK_ALLOWED_HOSTS = []
    for address in ("93.184.215.14", "2606:4700::1111", "2002:808:808::1"):  # the last: 6to4 of 8.8.8.8
        monkeypatch.setattr(http, "resolve", lambda host, port, a=address: [ipaddress.ip_address(a)])
        assert str(http.validate_url("https://hooks.example.com/x").address) == address


def test_allowed_hosts_still_override(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["2002:7f00:1::"]
    assert str(http.validate_url("http://[2002:7f00:1::]:9/hook").address) == "2002:7f00:1::"

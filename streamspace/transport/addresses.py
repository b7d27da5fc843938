"""IP address classification for every guard on connections the control plane makes.

The webhook SSRF guard (``plugins_app.http``) and the check of endpoints agents report
(``agents_app.endpoints``) both ask the same questions of an address, and both must see
through IPv6 forms that carry an IPv4 address inside them: a packet to such an address can
reach the embedded IPv4 host through a relay or translator (or, for IPv4-mapped addresses,
the local stack connects to it directly), so ``2002:a9fe:a9fe::`` is as dangerous as
``169.254.169.254``. The forms unwrapped are IPv4-mapped (``::ffff:0:0/96``),
IPv4-translated (``::ffff:0:0:0/96``), IPv4-compatible (``::/96``), 6to4 (``2002::/16``),
Teredo (``2001::/32``, server and client) and NAT64 (``64:ff9b::/96`` and the local-use
``64:ff9b:1::/48``).

The classification does not depend on the Python version's ``is_private`` tables for
these forms: each embedded address is judged as an IPv4 address.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services answer on these addresses (AWS, GCP, Azure, OpenStack on the
# IPv4 one; AWS's IPv6 one is a unique-local address, so it is named explicitly).
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})

_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")


def parse(value: str) -> IPAddress | None:
    """The address ``value`` spells (brackets and an IPv6 zone are dropped), or None."""
    text = value.strip().strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (empty for IPv4 and plain IPv6)."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    # NAT64 (RFC 6052 with the /96 well-known prefix; RFC 8215's local-use /48 is used with a
    # /96 too in practice) and SIIT's IPv4-translated form keep the IPv4 address in the
    # last 32 bits.
    if any(address in network for network in _NAT64) or address in _TRANSLATED:
        return [low32]
    if address in _COMPATIBLE and int(address) > 1:  # "::" and "::1" are not IPv4-compatible
        return [low32]
    return []


def is_metadata(address: IPAddress) -> bool:
    """A cloud metadata address, or one that carries it."""
    return address in METADATA_ADDRESSES or any(inner in METADATA_ADDRESSES for inner in embedded_ipv4(address))


def is_link_local(address: IPAddress) -> bool:
    """Link-local (``169.254.0.0/16``, ``fe80::/10``), directly or carried inside IPv6."""
    return address.is_link_local or any(inner.is_link_local for inner in embedded_ipv4(address))


def _not_public(address: IPAddress) -> bool:
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def is_public(address: IPAddress) -> bool:
    """A globally reachable unicast address, and so is every IPv4 address it carries.

    Loopback, private, shared (CGNAT), link-local, multicast, reserved, unspecified and
    documentation addresses are not public; neither is an IPv6 address wrapping one.
    """
    if address in METADATA_ADDRESSES or _not_public(address):
        return False
    return not any(inner in METADATA_ADDRESSES or _not_public(inner) for inner in embedded_ipv4(address))

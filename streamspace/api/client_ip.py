"""The client's address, as far as it can be known: the one rule for every use of it.

``STREAMSPACE_TRUSTED_PROXIES`` lists the reverse proxies (addresses or networks) in front of
the control plane. ``X-Forwarded-For`` is read only when the TCP peer is one of them, and the
client is the **rightmost** address in the chain that is not a trusted proxy: each trusted
proxy appends the address it saw, so everything to the left of the nearest untrusted hop was
written by the client and proves nothing. With the list empty (the default) forwarded
headers are ignored and the peer is the client.

Everything that needs the address uses this module: the lockout (django-axes'
``AXES_CLIENT_IP_CALLABLE``), the per-address SSO limit, audit records, API tokens'
``last_used_ip``, and, under ``python -m streamspace.serve``, the ASGI scope's ``client``
(daphne's and the proxy front's) and with it the access log and the session proxy's own
``X-Forwarded-For``. Resolution is idempotent: an address already resolved at the server's
edge resolves to itself again in Django, so resolving twice is harmless.

``settings.py`` parses the variable with :func:`parse_trusted_proxies` (importing
``django.conf`` there is safe: settings are read only when a function here is called).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings

from streamspace.env import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_SCHEMES = frozenset({"http", "https", "ws", "wss"})


def parse_trusted_proxies(values: Iterable[str]) -> tuple[Network, ...]:
    """``["10.0.0.5", "10.1.0.0/16", "::1"]`` → networks; a bad entry is a :class:`ConfigError`."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(f"STREAMSPACE_TRUSTED_PROXIES: {value!r} is not an IP address or network") from exc
    return tuple(networks)


def trusted_proxies() -> tuple[Network, ...]:
    """The configured proxies (``settings.STREAMSPACE_TRUSTED_PROXIES``)."""
    return getattr(settings, "STREAMSPACE_TRUSTED_PROXIES", ())


def _address(text: str) -> Address | None:
    """An IP address from a forwarded entry (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``), or None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


@functools.lru_cache(maxsize=4096)
def _is_trusted(text: str, networks: tuple[Network, ...]) -> bool:
    address = _address(text)
    return address is not None and any(address in network for network in networks)


def is_trusted(address: str | None, networks: Sequence[Network] | None = None) -> bool:
    """Whether ``address`` is one of the trusted proxies."""
    networks = tuple(trusted_proxies() if networks is None else networks)
    return bool(address and networks) and _is_trusted(address, networks)


def resolve(peer: str | None, forwarded_for: Iterable[str], networks: Sequence[Network] | None = None) -> str | None:
    """The client address for a connection from ``peer`` carrying ``forwarded_for`` headers.

    ``forwarded_for`` holds the values of every ``X-Forwarded-For`` header in order (each a
    comma-separated list). Walking from the peer leftwards, the first address that is not a
    trusted proxy is the client. An entry that is not an IP address stops the walk: the
    nearest trusted hop is then the best that is known (a proxy never writes such entries,
    so it came from the client). If every hop is trusted, the leftmost one is the client.
    """
    networks = tuple(trusted_proxies() if networks is None else networks)
    if not networks or not peer or not _is_trusted(peer, networks):
        return peer or None
    chain = [entry for value in forwarded_for for entry in value.split(",") if entry.strip()]
    client = peer
    for entry in reversed(chain):
        address = _address(entry)
        if address is None:
            break
        client = str(address)
        if not _is_trusted(client, networks):
            break
    return client


def request_ip(request: Any) -> str | None:
    """The client address of a Django request (``REMOTE_ADDR`` + ``X-Forwarded-For``).

    The value of ``AXES_CLIENT_IP_CALLABLE``, and what audit records and API tokens store.
    """
    if request is None:
        return None
    meta = getattr(request, "META", None) or {}
    forwarded = meta.get("HTTP_X_FORWARDED_FOR")
    return resolve(meta.get("REMOTE_ADDR") or None, [forwarded] if forwarded else [])


def scope_ip(scope: dict) -> str:
    """The client address of an ASGI scope (``client`` + ``X-Forwarded-For``), or ``""``."""
    peer = (scope.get("client") or ("", 0))[0] or ""
    networks = trusted_proxies()
    if not networks or not _is_trusted(peer, networks):  # the common case: no header scan
        return peer
    forwarded = [value.decode("latin-1") for name, value in scope.get("headers") or () if name == b"x-forwarded-for"]
    return resolve(peer, forwarded, networks) or ""


def forwarded_address(
    headers: Any,
    address_header_name: str | None = "X-Forwarded-For",
    port_header_name: str | None = None,
    proto_header_name: str | None = "X-Forwarded-Proto",
    original_addr: list | None = None,
    original_scheme: str | None = None,
) -> tuple[list | None, str | None]:
    """daphne's ``parse_x_forwarded_for`` contract, with this module's trust rule.

    ``headers`` is a Twisted ``Headers``, a dict (name → value or values) or a list of
    ``(name, value)`` pairs, names in any case. Returns ``([host, port], scheme)``: the
    peer's own unless the peer is a trusted proxy; then the resolved client (port 0: the
    client's port is not known) and the scheme from ``X-Forwarded-Proto`` (its rightmost
    value, written by the nearest proxy).
    """
    peer = str(original_addr[0]) if original_addr else None
    networks = trusted_proxies()
    if not address_header_name or not is_trusted(peer, networks):
        return original_addr, original_scheme
    values = _header_values(headers)
    client = resolve(peer, values.get(address_header_name.lower().encode(), []), networks)
    addr = original_addr if client == peer else [client, 0]
    scheme = original_scheme
    if proto_header_name:
        protos = values.get(proto_header_name.lower().encode(), [])
        proto = protos[-1].split(",")[-1].strip().lower() if protos else ""
        if proto in _SCHEMES:
            scheme = proto
    return addr, scheme


def _header_values(headers: Any) -> dict[bytes, list[str]]:
    if hasattr(headers, "getAllRawHeaders"):  # Twisted's Headers
        items: Iterable = ((name, value) for name, values in headers.getAllRawHeaders() for value in values)
    elif isinstance(headers, dict):
        items = (
            (name, value)
            for name, values in headers.items()
            for value in (values if isinstance(values, list | tuple) else [values])
        )
    else:
        items = headers
    out: dict[bytes, list[str]] = {}
    for name, value in items:
        key = (name if isinstance(name, bytes) else name.encode("latin-1")).lower()
        out.setdefault(key, []).append(value.decode("latin-1") if isinstance(value, bytes) else str(value))
    return out

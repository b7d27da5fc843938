"""Which endpoints an agent may report for its sessions.

A session's ``endpoint`` (``host:port``) is where the proxy connects to reach the session
directly, carrying the viewer's traffic. Only the agent reports it, so an agent's token is
enough to point a session anywhere the control plane can connect: at the cloud metadata
service, at a service on the control plane's own loopback, or at a listener of the token
holder's. :func:`refusal` is the rule an endpoint must pass before it is stored:

* it is ``host:port`` (IPv6 in brackets), port 1-65535, nothing else;
* never a cloud metadata address (``169.254.169.254``, ``fd00:ec2::254``), link-local,
  unspecified or multicast, nor an IPv6 address carrying one of those IPv4 addresses
  (6to4, Teredo, NAT64, IPv4-mapped: ``streamspace.transport.addresses``); no setting
  allows these;
* an IP address must lie in the networks of the agent's platform
  (:data:`PLATFORM_NETWORKS`: loopback for a ``local`` agent, which runs on the control
  plane's host, and only for it; the private ranges for ``docker`` and ``kubernetes``), or
  in a network the operator added for that platform (``STREAMSPACE_AGENT_ENDPOINT_NETWORKS``,
  e.g. ``docker=203.0.113.0/24`` for a Docker host reached on a public address, or
  ``docker=127.0.0.1/32`` for a Docker engine on the control plane's own host);
* a host name must be the name of the session's own workload (a name could resolve
  anywhere, so no other is trusted): ``streamspace-<session id>`` (docker, on its network),
  ``ss-<session id>[.<namespace>[.svc[.cluster.local]]]`` (kubernetes), ``localhost``
  (local).

A refused endpoint is not stored (the session's endpoint is cleared, the rest of the status
applies, and the proxy uses the agent's tunnel where the agent allows it); the refusal is
audited (``agent.endpoint_refused``) and the agent gets an ``error`` frame
(``endpoint_refused``) when the report came in a ``session_status`` frame.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from streamspace.transport import addresses

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
_LOOPBACK = ("127.0.0.0/8", "::1/128")
PLATFORM_NETWORKS: dict[str, tuple[IPNetwork, ...]] = {
    "local": tuple(ipaddress.ip_network(n) for n in _LOOPBACK),
    "docker": tuple(ipaddress.ip_network(n) for n in _PRIVATE),
    # Pod and service ranges: private, or the shared (CGNAT) range some clusters use.
    "kubernetes": tuple(ipaddress.ip_network(n) for n in (*_PRIVATE, "100.64.0.0/10")),
}
_DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"


def refusal(
    endpoint: str,
    *,
    platform: str,
    session_id: str,
    extra_networks: Mapping[str, Sequence[IPNetwork]] | None = None,
) -> str | None:
    """Why an agent of ``platform`` may not report ``endpoint`` for ``session_id``; None if it may."""
    parsed = split_endpoint(endpoint)
    if parsed is None:
        return "not host:port"
    host, _ = parsed
    address = addresses.parse(host)
    if address is None:
        if _names_the_session(host, platform=platform, session_id=session_id):
            return None
        return f"{host} is not the name of this session's workload"
    if addresses.is_metadata(address):
        return f"{address} is a cloud metadata address"
    if addresses.is_link_local(address):
        return f"{address} is link-local"
    if (
        address.is_unspecified
        or address.is_multicast
        or any(
            inner.is_unspecified or inner.is_multicast or inner == ipaddress.IPv4Address("255.255.255.255")
            for inner in addresses.embedded_ipv4(address)
        )
    ):
        return f"{address} is not a unicast address"
    allowed = (*PLATFORM_NETWORKS.get(platform, ()), *(extra_networks or {}).get(platform, ()))
    # The address itself must be in a network: an IPv6 form wrapping an allowed IPv4
    # address is not (agents report the address their workload listens on, as it is).
    if any(address.version == network.version and address in network for network in allowed):
        return None
    if address.is_loopback or any(inner.is_loopback for inner in addresses.embedded_ipv4(address)):
        return f"{address} is loopback, which only a local agent may report"
    return f"{address} is outside the networks a {platform} agent may report"


def split_endpoint(endpoint: Any) -> tuple[str, int] | None:
    """``(host, port)`` of a well-formed ``host:port`` / ``[v6]:port``, else None."""
    if not isinstance(endpoint, str) or not endpoint or len(endpoint) > 300 or endpoint != endpoint.strip():
        return None
    try:
        parts = urlsplit("//" + endpoint)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host or port is None or not 1 <= port <= 65535 or parts.username or parts.password:
        return None
    if parts.path or parts.query or parts.fragment or "@" in endpoint:
        return None
    return host, port


def _names_the_session(host: str, *, platform: str, session_id: str) -> bool:
    host = host.lower().rstrip(".")
    session = re.escape(session_id.lower())
    if platform == "docker":
        return host == f"streamspace-{session_id.lower()}"
    if platform == "kubernetes":
        return re.fullmatch(rf"ss-{session}(?:\.{_DNS_LABEL}(?:\.svc(?:\.cluster\.local)?)?)?", host) is not None
    if platform == "local":
        return host == "localhost"
    return False


def parse_networks(items: Sequence[str]) -> dict[str, tuple[IPNetwork, ...]]:
    """``["docker=203.0.113.0/24", ...]`` (``STREAMSPACE_AGENT_ENDPOINT_NETWORKS``) by platform.

    Raises ``ValueError`` naming the item that is not ``<platform>=<network>``.
    """
    networks: dict[str, list[IPNetwork]] = {}
    for item in items:
        platform, sep, network = item.partition("=")
        platform, network = platform.strip(), network.strip()
        if not sep or platform not in PLATFORM_NETWORKS:
            raise ValueError(
                f"{item!r} is not <platform>=<network> with platform one of {', '.join(PLATFORM_NETWORKS)}"
            )
        try:
            parsed = ipaddress.ip_network(network, strict=False)
        except ValueError as exc:
            raise ValueError(f"{item!r}: {exc}") from None
        networks.setdefault(platform, []).append(parsed)
    return {platform: tuple(values) for platform, values in networks.items()}


@lru_cache(maxsize=4)
def _configured(items: tuple[str, ...]) -> dict[str, tuple[IPNetwork, ...]]:
    return parse_networks(items)


def vetted(platform: str, session_id: str, endpoint: str | None) -> tuple[str | None, str | None]:
    """The endpoint to store for an agent's report and, if it was refused, why.

    ``None`` (nothing reported) stays ``None``: the stored endpoint is left as it is. A
    refused endpoint becomes ``""``: whatever was stored before may now belong to another
    workload, so it is cleared rather than kept.
    """
    if endpoint is None:
        return None, None
    extra = _configured(tuple(settings.STREAMSPACE_AGENT_ENDPOINT_NETWORKS))
    reason = refusal(endpoint, platform=platform, session_id=session_id, extra_networks=extra)
    return ("", reason) if reason else (endpoint, None)

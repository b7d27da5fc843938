"""The one choke point for outbound HTTP from the control plane (webhooks, integrations).

Every request goes through :func:`post`, which

- refuses URLs whose host resolves to a loopback, private, link-local, multicast, reserved
  or unspecified address (SSRF), or to an IPv6 address that carries such an IPv4 address
  (6to4, Teredo, NAT64, IPv4-mapped/-compatible: ``streamspace.transport.addresses``),
  checking *every* resolved address, unless the host (or the address) is listed in
  ``WEBHOOK_ALLOWED_HOSTS``;
- connects to the address it validated (the URL's host is kept for ``Host`` and TLS SNI /
  certificate checks), so a DNS answer that changes between the check and the connection
  cannot redirect the request inside the network;
- never follows redirects, and bounds the time (``WEBHOOK_TIMEOUT_S``) and the response
  body it reads.

Tests patch this module once instead of every caller.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from django.conf import settings

from streamspace.transport.addresses import is_public

USER_AGENT = "StreamSpace-Webhooks/1.0"
MAX_RESPONSE_BYTES = 64 * 1024


class OutboundURLError(ValueError):
    """The URL may not be called: bad scheme or host, or a forbidden address."""


@dataclass(frozen=True)
class Response:
    status_code: int
    latency_ms: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _forbidden(address: IPAddress) -> bool:
    return not is_public(address)


def _allowed_hosts() -> set[str]:
    return {h.strip().lower().strip("[]") for h in settings.WEBHOOK_ALLOWED_HOSTS if h.strip()}


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OutboundURLError(f"The host {host} cannot be resolved.") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OutboundURLError(f"The host {host} has no address.")
    return addresses


@dataclass(frozen=True)
class Target:
    url: str  # as configured
    host: str
    port: int
    address: IPAddress  # the validated address the request connects to


def validate_url(url: str) -> Target:
    """Check ``url`` for outbound use and return the address to connect to.

    Raises :class:`OutboundURLError` with a message an admin can act on.
    """
    if not isinstance(url, str) or len(url) > 2000:
        raise OutboundURLError("The URL must be a string of at most 2000 characters.")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise OutboundURLError("Only http and https URLs are allowed.")
    if parts.username or parts.password:
        raise OutboundURLError("Credentials in the URL are not allowed; use headers.")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise OutboundURLError("The URL's port is not valid.") from exc
    if not host:
        raise OutboundURLError("The URL has no host.")
    host = host.lower()
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = resolve(host, port)
    allowed = _allowed_hosts()
    if host not in allowed:
        for address in addresses:
            if _forbidden(address) and str(address) not in allowed:
                raise OutboundURLError(
                    f"{host} resolves to {address}, a loopback, private or link-local address; "
                    "add the host to WEBHOOK_ALLOWED_HOSTS to allow it."
                )
    return Target(url=url.strip(), host=host, port=port, address=addresses[0])


def _pinned_url(target: Target) -> str:
    parts = urlsplit(target.url)
    ip = f"[{target.address}]" if target.address.version == 6 else str(target.address)
    return urlunsplit((parts.scheme, f"{ip}:{target.port}", parts.path or "/", parts.query, ""))


def post(url: str, *, body: bytes, headers: dict[str, str] | None = None, timeout: float | None = None) -> Response:
    """POST ``body`` to ``url`` after :func:`validate_url`; returns status, latency and text.

    Raises :class:`OutboundURLError` for a refused URL and ``httpx.HTTPError`` for network
    failures and timeouts.
    """
    target = validate_url(url)
    timeout = float(timeout or settings.WEBHOOK_TIMEOUT_S)
    default_port = 443 if target.url.startswith("https") else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    if ":" in target.host:
        host_header = f"[{target.host}]" if target.port == default_port else f"[{target.host}]:{target.port}"
    request_headers = {"User-Agent": USER_AGENT, **(headers or {}), "Host": host_header}
    extensions: dict[str, Any] = {"sni_hostname": target.host}
    started = time.monotonic()
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        request = client.build_request("POST", _pinned_url(target), content=body, headers=request_headers)
        request.extensions.update(extensions)
        response = client.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                if time.monotonic() - started > timeout:  # httpx timeouts are per read, not total
                    raise httpx.ReadTimeout(f"no complete response within {timeout:g} s", request=request)
                chunks.append(chunk)
                size += len(chunk)
                if size >= MAX_RESPONSE_BYTES:
                    break
        finally:
            response.close()
        latency_ms = int((time.monotonic() - started) * 1000)
        text = b"".join(chunks)[:MAX_RESPONSE_BYTES].decode("utf-8", "replace")
        return Response(status_code=response.status_code, latency_ms=latency_ms, text=text)

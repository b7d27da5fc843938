"""Where a session's traffic goes: direct to its endpoint, or through its agent's tunnel.

``Agent.proxy_mode`` decides: ``direct`` (only the endpoint), ``tunnel`` (only the agent),
``auto`` (the endpoint when it accepts connections, else the tunnel; a failed direct
connect is remembered for a minute so the next requests go straight to the tunnel).

HTTP keep-alive pools: one aiohttp session for direct upstreams and one whose connector
opens tunnels (pooled per session, so a page load reuses a few tunnels rather than opening
one per request). Both live as long as their event loop.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.client_exceptions import ClientConnectorError
from django.conf import settings

from sessions_app.proxy.auth import SessionTarget
from sessions_app.proxy.tunnel import TunnelUnavailable, open_tunnel

DIRECT_RETRY_S = 60.0
TUNNEL_HOST_SUFFIX = ".tunnel.streamspace.invalid"
READ_BUFSIZE = 256 * 1024


@dataclass(frozen=True)
class Route:
    kind: str  # "direct" or "tunnel"
    host: str
    port: int
    agent_pk: int | None = None

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def host_header(self) -> str:
        """``Host`` sent upstream: the endpoint, or ``localhost:<port>`` through a tunnel."""
        return f"localhost:{self.port}" if self.kind == "tunnel" else self.authority

    def location_hosts(self) -> frozenset[str]:
        """Authorities whose absolute redirects point back into the session."""
        return frozenset({self.authority.lower(), f"localhost:{self.port}", f"127.0.0.1:{self.port}"})


class NoRoute(Exception):
    """The session has neither a reachable endpoint nor a usable tunnel."""


_direct_failed: dict[uuid.UUID, float] = {}
# Tunnel host -> (agent pk, session id, session port), filled before a tunnelled request.
_tunnel_routes: dict[str, tuple[int, str, int]] = {}


def parse_endpoint(endpoint: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit("//" + endpoint)
        if parts.hostname and parts.port:
            return parts.hostname, parts.port
    except ValueError:
        pass
    return None


def routes_for(target: SessionTarget) -> list[Route]:
    """The routes to try, in order."""
    mode = target.proxy_mode
    routes: list[Route] = []
    direct = parse_endpoint(target.endpoint) if target.endpoint else None
    if direct and mode != "tunnel":
        skip = mode == "auto" and _direct_failed.get(target.session_id, 0) > time.monotonic()
        if not skip:
            routes.append(Route("direct", direct[0], direct[1]))
    if mode != "direct" and target.agent_pk is not None and target.port:
        host = f"{target.session_id}{TUNNEL_HOST_SUFFIX}"
        _tunnel_routes[host] = (target.agent_pk, str(target.session_id), target.port)
        routes.append(Route("tunnel", host, target.port, target.agent_pk))
    if not routes:
        raise NoRoute("The session has no endpoint the control plane can reach and no tunnel.")
    return routes


def direct_failed(target: SessionTarget) -> None:
    if target.proxy_mode == "auto":
        _direct_failed[target.session_id] = time.monotonic() + DIRECT_RETRY_S


def is_connect_error(exc: BaseException) -> bool:
    return isinstance(exc, ClientConnectorError | ConnectionError | TunnelUnavailable) or (
        isinstance(exc, OSError) and not isinstance(exc, TimeoutError)
    )


class TunnelConnector(aiohttp.BaseConnector):
    """An aiohttp connector whose connections are agent tunnels (``*.tunnel.streamspace.invalid``)."""

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        route = _tunnel_routes.get(req.url.host or "")
        if route is None:
            raise ClientConnectorError(req.connection_key, OSError("unknown tunnel host"))
        agent_pk, session_id, port = route
        try:
            sock = await open_tunnel(agent_pk, session_id, port)
        except TunnelUnavailable as exc:
            raise ClientConnectorError(req.connection_key, OSError(str(exc))) from exc
        _, proto = await self._loop.create_connection(self._factory, sock=sock)
        return proto


@dataclass
class _Clients:
    direct: aiohttp.ClientSession
    tunnel: aiohttp.ClientSession


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Clients] = weakref.WeakKeyDictionary()


def _session(connector: aiohttp.BaseConnector) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,  # bytes pass through as the session encoded them
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        read_bufsize=READ_BUFSIZE,
        timeout=client_timeout(),
    )


def client_timeout() -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None,
        connect=settings.STREAMSPACE_PROXY_CONNECT_TIMEOUT_S + settings.STREAMSPACE_PROXY_TUNNEL_TIMEOUT_S,
        sock_connect=settings.STREAMSPACE_PROXY_CONNECT_TIMEOUT_S,
        sock_read=settings.STREAMSPACE_PROXY_READ_TIMEOUT_S,
    )


def client_for(route: Route) -> aiohttp.ClientSession:
    """The pooled HTTP client for a route (created once per event loop)."""
    loop = asyncio.get_running_loop()
    clients = _clients.get(loop)
    if clients is None or clients.direct.closed:
        clients = _Clients(
            direct=_session(aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ttl_dns_cache=300)),
            tunnel=_session(TunnelConnector(limit=0, keepalive_timeout=30)),
        )
        _clients[loop] = clients
        _close_on_server_shutdown(loop)
    return clients.tunnel if route.kind == "tunnel" else clients.direct


def _close_on_server_shutdown(loop: asyncio.AbstractEventLoop) -> None:
    """Under daphne, close the pools before the reactor stops (no "unclosed session" noise)."""
    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    def close() -> Deferred | None:
        clients = _clients.pop(loop, None)
        if clients is None or loop.is_closed():
            return None
        return Deferred.fromFuture(loop.create_task(_close(clients)))

    reactor.addSystemEventTrigger("before", "shutdown", close)


async def _close(clients: _Clients) -> None:
    await clients.direct.close()
    await clients.tunnel.close()


async def close_clients() -> None:
    """Close this loop's pools (tests and shutdown)."""
    clients = _clients.pop(asyncio.get_running_loop(), None)
    if clients is not None:
        await _close(clients)

"""Where a session's traffic goes: direct to its endpoint, or through its agent's tunnel.

``Agent.proxy_mode`` decides: ``direct`` (only the endpoint), ``tunnel`` (only the agent),
``auto`` (the endpoint when it accepts connections, else the tunnel; a failed direct
connect is remembered for a minute so the next requests go straight to the tunnel).

HTTP keep-alive: one :class:`~sessions_app.proxy.client.Pool` per event loop, keyed by
route, so a page load reuses a few connections (or tunnels: pooled per session) rather
than opening one per request.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
import uuid
import weakref
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from agents_app.tunnels import TunnelUnavailable, open_tunnel
from sessions_app.proxy.auth import SessionTarget
from sessions_app.proxy.client import Body, ConnectFailed, Headers, Pool, Response

DIRECT_RETRY_S = 60.0


@dataclass(frozen=True)
class Route:
    kind: str  # "direct" or "tunnel"
    host: str  # the endpoint's host; "localhost" through a tunnel (the agent dials it)
    port: int
    agent_pk: int | None = None
    session_id: str = ""

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def host_header(self) -> str:
        """``Host`` sent upstream: the endpoint, or ``localhost:<port>`` through a tunnel."""
        return self.authority

    @functools.cached_property
    def host_header_bytes(self) -> bytes:
        return self.host_header.encode()

    @functools.cached_property
    def pool_key(self) -> tuple:
        return (self.kind, self.host, self.port, self.session_id)

    @functools.cached_property
    def location_hosts(self) -> frozenset[str]:
        """Authorities whose absolute redirects point back into the session."""
        return frozenset({self.authority.lower(), f"localhost:{self.port}", f"127.0.0.1:{self.port}"})


class NoRoute(Exception):
    """The session has neither a reachable endpoint nor a usable tunnel."""


_direct_failed: dict[uuid.UUID, float] = {}


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
    direct, tunnel = _candidates(target.endpoint, target.proxy_mode, target.agent_pk, target.port, target.session_id)
    routes: list[Route] = []
    if direct is not None and not (
        target.proxy_mode == "auto" and _direct_failed.get(target.session_id, 0) > time.monotonic()
    ):
        routes.append(direct)
    if tunnel is not None:
        routes.append(tunnel)
    if not routes:
        raise NoRoute("The session has no endpoint the control plane can reach and no tunnel.")
    return routes


@functools.lru_cache(maxsize=4096)
def _candidates(
    endpoint: str, mode: str, agent_pk: int | None, port: int | None, session_id: uuid.UUID
) -> tuple[Route | None, Route | None]:
    """The direct and tunnel routes a session allows (the same objects while it does not change)."""
    address = parse_endpoint(endpoint) if endpoint else None
    direct = Route("direct", address[0], address[1]) if address and mode != "tunnel" else None
    tunnel = None
    if mode != "direct" and agent_pk is not None and port:
        tunnel = Route("tunnel", "localhost", port, agent_pk, str(session_id))
    return direct, tunnel


def direct_failed(target: SessionTarget) -> None:
    if target.proxy_mode == "auto":
        _direct_failed[target.session_id] = time.monotonic() + DIRECT_RETRY_S


async def connect(route: Route, factory: Any) -> tuple[Any, Any]:
    """A connection to the route: the pool's opener, and the front's WebSocket pipe's."""
    loop = asyncio.get_running_loop()
    if route.kind == "tunnel":
        assert route.agent_pk is not None
        try:
            sock = await open_tunnel(route.agent_pk, route.session_id, route.port)
        except TunnelUnavailable as exc:
            raise ConnectFailed(str(exc)) from exc
        return await loop.create_connection(factory, sock=sock)
    return await asyncio.wait_for(
        loop.create_connection(factory, route.host, route.port), settings.STREAMSPACE_PROXY_CONNECT_TIMEOUT_S
    )


def request(route: Route, method: bytes, target: bytes, headers: Headers, body: Body) -> Awaitable[Response]:
    """Send a request to the session over ``route``; the response once its head arrived.

    Returns the pool's coroutine rather than awaiting it (one frame less per request).
    """
    return pool().request(
        route.pool_key,
        functools.partial(connect, route),
        method,
        target,
        [*headers, (b"host", route.host_header_bytes)],
        body,
        read_timeout=settings.STREAMSPACE_PROXY_READ_TIMEOUT_S,
    )


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pool] = weakref.WeakKeyDictionary()


_last: tuple[asyncio.AbstractEventLoop | None, Pool | None] = (None, None)  # the last lookup, by identity


def pool() -> Pool:
    """This event loop's connection pool."""
    global _last
    loop = asyncio.get_running_loop()
    last_loop, current = _last
    if last_loop is loop and current is not None and not current.closed:
        return current
    current = _pools.get(loop)
    if current is None or current.closed:
        current = _pools[loop] = Pool()
        _close_on_server_shutdown(loop)
    _last = (loop, current)
    return current


def _close_on_server_shutdown(loop: asyncio.AbstractEventLoop) -> None:
    """Under daphne, close the pool before the reactor stops."""
    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import reactor  # noqa: PLC0415 only once daphne installed it; importing installs one

    def close() -> None:
        current = _pools.pop(loop, None)
        if current is not None and not loop.is_closed():
            current.close()

    reactor.addSystemEventTrigger("before", "shutdown", close)


async def close_clients() -> None:
    """Close this loop's pool (tests and shutdown)."""
    current = _pools.pop(asyncio.get_running_loop(), None)
    if current is not None:
        current.close()

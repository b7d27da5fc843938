"""Session isolation on Docker: one bridge network per session (docs/architecture.md §17).

A session container is the only workload on its network, ``streamspace-session-<id>``:
Docker isolates bridge networks from each other, so it cannot open a connection to another
session's container, nor to anything on the deployment's own networks (PostgreSQL, Redis,
the control plane). What must reach the session's port is

* an agent that runs on the host (``make run``, systemd): the host reaches every bridge, so
  it dials the container's address on the session network directly;
* an agent that runs in a container (the compose deployment): it joins each session's
  network itself (:meth:`SessionNetworks.join`), and the control plane reaches the session
  through the agent's tunnel. The agent listens on no port, so a session that sees the agent
  on its network still cannot open a connection to it.

Subnets come from the agent's own pool (option ``subnet_pool``, default ``10.213.0.0/16`` cut
into /28s: 4096 sessions, 13 addresses each for the session and agent replicas), not from
the engine's default pools, which hold about thirty networks.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

try:  # optional dependency: pip install streamspace-agent[docker]
    import docker
    import docker.errors
    import docker.types
except ImportError:
    docker = None

from agent_runtime.backends.base import BackendError

LABEL_SESSION = "streamspace.session-id"
LABEL_MANAGED_BY = "streamspace.managed-by"
DEFAULT_SUBNET_POOL = "10.213.0.0/16"
DEFAULT_SUBNET_PREFIX = 28
SUBNET_ATTEMPTS = 32  # subnets tried (from a hash of the session id on) before giving up
_CONTAINER_ID = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)")

log = logging.getLogger(__name__)


def network_name(session_id: str) -> str:
    return f"streamspace-session-{session_id}"


def subnet_pool(value: str, prefix: str | int = DEFAULT_SUBNET_PREFIX) -> list[ipaddress.IPv4Network]:
    """The subnets a pool is cut into; a clear error for a pool or size that makes no sense."""
    try:
        pool = ipaddress.IPv4Network(value, strict=True)
        size = int(prefix)
    except ValueError as exc:
        raise BackendError(f"subnet_pool={value!r} / subnet_prefix={prefix!r}: {exc}") from None
    if not pool.prefixlen <= size <= 29:
        raise BackendError(f"subnet_prefix must be between the pool's /{pool.prefixlen} and /29, not /{size}")
    return list(pool.subnets(new_prefix=size))


def candidate_subnets(session_id: str, subnets: list[ipaddress.IPv4Network]) -> list[ipaddress.IPv4Network]:
    """The subnets to try for a session, starting at one its id picks (spread over the pool)."""
    start = int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:8], "big") % len(subnets)
    return [subnets[(start + i) % len(subnets)] for i in range(min(SUBNET_ATTEMPTS, len(subnets)))]


def network_config(session_id: str, agent_id: str, subnet: ipaddress.IPv4Network) -> dict[str, Any]:
    """Keyword arguments of ``client.networks.create`` for a session's network."""
    gateway = str(next(subnet.hosts()))
    pool = docker.types.IPAMPool(subnet=str(subnet), gateway=gateway)
    return {
        "name": network_name(session_id),
        "driver": "bridge",
        "labels": {LABEL_SESSION: session_id, LABEL_MANAGED_BY: agent_id},
        "ipam": docker.types.IPAMConfig(pool_configs=[pool]),
        "check_duplicate": True,
    }


def container_id_from_mountinfo(text: str) -> str | None:
    """The id of the container this process runs in, from ``/proc/self/mountinfo`` (Docker
    bind-mounts ``/var/lib/docker/containers/<id>/hostname`` and friends into it)."""
    match = _CONTAINER_ID.search(text)
    return match.group(1) if match else None


def own_container_candidates() -> list[str]:
    """Names or ids under which the engine may know this process's container (most certain first)."""
    candidates = []
    try:
        found = container_id_from_mountinfo(Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        found = None
    if found:
        candidates.append(found)
    if Path("/.dockerenv").exists():
        candidates.append(socket.gethostname())  # a container's default hostname is its short id
    return candidates


def address_on(attrs: dict[str, Any], network: str) -> str | None:
    """A container's IPv4 address on ``network`` (inspect output), None if it has none there."""
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    address = (networks.get(network) or {}).get("IPAddress")
    return address or None


Runner = Callable[..., Awaitable[Any]]


class SessionNetworks:
    """Creates, joins and removes the per-session networks of one agent.

    ``run``: the backend's executor call (blocking SDK calls off the event loop, API errors
    as :class:`BackendError`, ``NotFound`` passed through); ``client``: the engine client.
    ``agent_container``: ``auto`` (find the container this agent runs in, if any), ``none``,
    or the container's name or id.
    """

    def __init__(
        self,
        run: Runner,
        client: Callable[[], Awaitable[Any]],
        agent_id: str,
        *,
        pool: str = DEFAULT_SUBNET_POOL,
        prefix: str | int = DEFAULT_SUBNET_PREFIX,
        agent_container: str = "auto",
    ) -> None:
        self._run = run
        self._client = client
        self.agent_id = agent_id
        self.pool = pool
        self.subnets = subnet_pool(pool, prefix)
        self.agent_container = agent_container.strip() or "auto"
        self._own: str | None = None
        self._own_resolved = False
        self._joined: set[str] = set()

    async def own_container(self) -> str | None:
        """The id of the container this agent runs in (None: it runs on the host), found once."""
        if self._own_resolved:
            return self._own
        wanted = self.agent_container
        candidates = [] if wanted.lower() == "none" else own_container_candidates() if wanted == "auto" else [wanted]
        client = await self._client()
        for candidate in candidates:
            try:
                container = await self._run(client.containers.get, candidate)
            except (docker.errors.NotFound, BackendError):
                continue
            self._own = container.id
            break
        else:
            if wanted not in ("auto", "none"):
                raise BackendError(f"agent_container={wanted!r}: no such container on this Docker engine")
        self._own_resolved = True
        if self._own:
            log.info("agent runs in a container: joining session networks", extra={"container": self._own[:12]})
        return self._own

    async def ensure(self, session_id: str) -> str:
        """The session's network, created when missing (on a free subnet of the pool), joined
        by this agent's container when it runs in one. Returns its name."""
        name = network_name(session_id)
        client = await self._client()
        try:
            await self._run(client.networks.get, name)
        except docker.errors.NotFound:
            await self._create(session_id)
        await self.join(name)
        return name

    async def _create(self, session_id: str) -> None:
        client = await self._client()
        last = ""
        for subnet in candidate_subnets(session_id, self.subnets):
            try:
                await self._run(client.networks.create, **network_config(session_id, self.agent_id, subnet))
                return
            except BackendError as exc:
                last = str(exc)
                if "already exists" in last:  # created concurrently (another replica, a retried command)
                    return
                if "overlap" not in last:
                    raise
        raise BackendError(f"no free subnet for the session's network in {self.pool}: {last}")

    async def join(self, name: str) -> None:
        """Connect this agent's container to network ``name`` (nothing when it runs on the host)."""
        if name in self._joined:
            return
        own = await self.own_container()
        if own is None:
            self._joined.add(name)
            return
        client = await self._client()
        try:
            network = await self._run(client.networks.get, name)
            await self._run(network.connect, own)
        except BackendError as exc:
            if "already exists" not in str(exc):
                raise
        self._joined.add(name)

    async def remove(self, session_id: str) -> None:
        """Remove the session's network (its container is already gone); a missing one is fine."""
        name = network_name(session_id)
        self._joined.discard(name)
        client = await self._client()
        try:
            network = await self._run(client.networks.get, name)
            await self._run(network.reload)
            for container_id in network.attrs.get("Containers") or {}:
                await self._run(network.disconnect, container_id, force=True)
            await self._run(network.remove)
        except docker.errors.NotFound:
            pass
        except BackendError as exc:  # still in use (a concurrent start): the next stop removes it
            log.warning("session network kept", extra={"network": name, "reason": str(exc)})

"""One agent per Docker daemon (the plain Docker mode across several hosts).

Without Swarm each Docker host is its own agent: the control plane places sessions across
agents, and an agent only ever sees the containers of the daemon it talks to. Two rules
keep that true:

* **The daemon's claim.** The first agent to start on a daemon creates the volume
  ``streamspace-daemon-claim`` labelled with its agent id and the daemon's ID (``docker
  info``). Creating a volume that exists returns the existing one, so the claim is atomic:
  of two agents starting at once, one wins and the other reads the winner's labels. An
  agent with another id refuses to start while the claiming agent still has containers on
  the daemon (its sessions: a second agent would offer the same host to the control plane
  twice). A claim whose agent has no containers left is stale and is taken over; to move
  a host to another agent at once, remove the volume (``docker volume rm
  streamspace-daemon-claim``). Replicas of one agent (the same agent id) share the claim.
* **Leases are scoped to the daemon.** The replicas of an agent that share a daemon elect
  their leader on ``<LEASE_KEY>-<daemon key>`` (the first 12 hex digits of the SHA-256 of
  the daemon's ID), so replicas that talk to different daemons can never take each other's
  lease and lead a host whose containers they cannot see.

The claim check is the backend option ``daemon_claim``: ``enforce`` (default) or ``off``
(for test engines shared by many short-lived test agents).

See docs/architecture.md §18.4.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Any

from agent_runtime.backends import docker_objects as objects
from agent_runtime.backends.base import BackendError
from agent_runtime.config import LeaseConfig

CLAIM_VOLUME = "streamspace-daemon-claim"
LABEL_DAEMON_ID = "streamspace.daemon-id"
CLAIM_POLICIES = ("enforce", "off")

log = logging.getLogger(__name__)


def daemon_key(daemon_id: str) -> str:
    """12 hex digits naming a daemon in lease keys (its ID has ``:``, unsafe in keys)."""
    return hashlib.sha256(daemon_id.encode()).hexdigest()[:12]


def daemon_lease(lease: LeaseConfig, daemon_id: str) -> LeaseConfig:
    """``lease`` with its key scoped to the daemon: ``<LEASE_KEY>-<daemon key>``."""
    return dataclasses.replace(lease, lease_key=f"{lease.lease_key}-{daemon_key(daemon_id)}")


def refusal(holder: str, agent_id: str, daemon_id: str) -> str:
    return (
        f"this Docker daemon ({daemon_id}) is managed by agent {holder!r}, which still has containers on it; "
        f"agent {agent_id!r} will not manage it too. Run one agent per Docker host (its replicas share the "
        "daemon and elect a leader among themselves), give each host its own agent id, and let the control "
        f"plane place sessions across agents. To hand this host to {agent_id!r}, stop {holder!r}'s sessions "
        f"or remove the claim: docker volume rm {CLAIM_VOLUME}"
    )


def claim_daemon(client: Any, agent_id: str) -> str:
    """Claim the daemon for ``agent_id`` or raise :class:`BackendError`; returns the daemon's ID.

    Blocking (Docker SDK): run it in the backend's executor.
    """
    daemon_id = str(client.info().get("ID") or "")
    if not daemon_id:
        raise BackendError("this Docker engine does not report an ID (docker info), so it cannot be claimed")
    ours = {objects.LABEL_MANAGED_BY: agent_id, LABEL_DAEMON_ID: daemon_id}
    for _attempt in range(2):
        volume = client.volumes.create(name=CLAIM_VOLUME, driver="local", labels=ours)
        holder = (volume.attrs.get("Labels") or {}).get(objects.LABEL_MANAGED_BY, "")
        if holder == agent_id:
            return daemon_id
        theirs = client.api.containers(all=True, limit=1, filters={"label": f"{objects.LABEL_MANAGED_BY}={holder}"})
        if theirs:
            raise BackendError(refusal(holder, agent_id, daemon_id))
        log.warning("taking over a stale daemon claim", extra={"previous_agent": holder, "daemon_id": daemon_id})
        try:
            volume.remove()
        except Exception as exc:  # removed or re-created concurrently: read the claim again
            log.info("claim changed while taking it over", extra={"error": str(exc)})
    raise BackendError(
        f"another agent claimed this Docker daemon ({daemon_id}) while agent {agent_id!r} was taking over a stale "
        f"claim; see the volume {CLAIM_VOLUME}"
    )

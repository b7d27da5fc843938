"""Leader election among the replicas of one agent (client-go ``leaderelection`` semantics).

A :class:`Lease` is the storage primitive (``file``: a holder and deadline written under a
short ``flock``; ``redis``: ``SET NX PX`` with compare-and-renew / compare-and-delete in Lua;
``kubernetes``: a ``coordination.k8s.io/v1`` Lease written with optimistic concurrency,
:mod:`agent_runtime.leader.kubernetes`; ``swarm``: a record in the Swarm's raft store written
by compare-and-swap on its version, :mod:`agent_runtime.leader.swarm`); every backend expires
a lease its holder stops renewing. :class:`LeaderElector` runs the loop:

* a follower tries to acquire every ``retry_period``;
* the leader renews every ``retry_period``; each success extends its *mandate* to
  ``start of that renew + renew_deadline``;
* a leader whose mandate ran out stops acting at once: :attr:`LeaderElector.is_leader`
  is computed from the monotonic clock, so it turns false even if the renew loop itself
  was stuck (a SIGSTOP-paused process, a hung Redis call). The loop then steps down and
  tells its listeners.

Because ``renew_deadline < lease_duration``, a mandate always ends before the lease another
replica could take over expires: two replicas never act at the same time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

from agent_runtime.config import ConfigError, LeaseConfig
from agent_runtime.leader.file import FileLease
from agent_runtime.leader.lease import Lease
from agent_runtime.leader.redis import RedisLease

__all__ = ["AlwaysLeader", "Elector", "Lease", "LeaderElector", "make_elector"]

log = logging.getLogger(__name__)

Listener = Callable[[bool], None]


class Elector(ABC):
    """What the connection needs from leader election."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _notify(self, is_leader: bool) -> None:
        for listener in list(self._listeners):
            try:
                listener(is_leader)
            except Exception:
                log.exception("leader listener failed")

    @property
    @abstractmethod
    def is_leader(self) -> bool: ...

    @abstractmethod
    async def run(self) -> None:
        """Run until cancelled."""

    async def stop(self) -> None:  # noqa: B027  (optional hook)
        """Stop acting and give up the lease (SIGTERM path)."""


class AlwaysLeader(Elector):
    """Without ``ENABLE_HA`` the single agent is always leader."""

    @property
    def is_leader(self) -> bool:
        return True

    async def run(self) -> None:
        await asyncio.Event().wait()


class LeaderElector(Elector):
    def __init__(self, lease: Lease, config: LeaseConfig, *, identity: str = ""):
        super().__init__()
        self.lease = lease
        self.config = config
        self.identity = identity
        self._leading = False
        self._mandate_until = 0.0
        self._stopped = False
        self.transitions = 0

    @property
    def is_leader(self) -> bool:
        return self._leading and time.monotonic() < self._mandate_until and not self._stopped

    def check(self) -> bool:
        """``is_leader``, stepping down (and notifying) if the mandate has run out."""
        if self._leading and not self.is_leader:
            self._step_down("renew deadline passed")
        return self.is_leader

    def _become_leader(self, started: float) -> None:
        self._mandate_until = started + self.config.renew_deadline
        if not self._leading:
            self._leading = True
            self.transitions += 1
            log.info("became leader", extra={"lease": self.config.lease_key, "identity": self.identity})
            self._notify(True)

    def _step_down(self, reason: str) -> None:
        if self._leading:
            self._leading = False
            self._mandate_until = 0.0
            self.transitions += 1
            log.warning("lost leadership", extra={"lease": self.config.lease_key, "reason": reason})
            self._notify(False)

    async def _attempt(self, operation, timeout: float) -> bool:
        try:
            return bool(await asyncio.wait_for(operation(), timeout=max(timeout, 0.05)))
        except TimeoutError:
            log.warning("lease operation timed out", extra={"lease": self.config.lease_key})
        except Exception as exc:  # a lease store outage is a failed attempt, never a crash
            log.warning("lease operation failed", extra={"lease": self.config.lease_key, "error": repr(exc)})
        return False

    async def run(self) -> None:
        cfg = self.config
        try:
            while not self._stopped:
                started = time.monotonic()
                if self._leading:
                    if started >= self._mandate_until:
                        self._step_down("renew deadline passed")
                        continue
                    if await self._attempt(self.lease.renew, self._mandate_until - started):
                        self._become_leader(started)
                    elif time.monotonic() >= self._mandate_until:
                        self._step_down("could not renew before the deadline")
                        await self._attempt(self.lease.release, cfg.retry_period)
                elif await self._attempt(self.lease.try_acquire, cfg.retry_period):
                    self._become_leader(started)
                await self._sleep_until(started + cfg.retry_period)
        finally:
            self._step_down("elector stopped")

    async def _sleep_until(self, wake_at: float) -> None:
        # Wake up at the mandate's end too, so the step-down is announced on time.
        if self._leading:
            wake_at = min(wake_at, self._mandate_until)
        await asyncio.sleep(max(0.0, wake_at - time.monotonic()))

    async def stop(self) -> None:
        self._stopped = True
        self._step_down("shutting down")
        try:
            await asyncio.wait_for(self.lease.close(), timeout=self.config.retry_period)
        except Exception as exc:
            log.warning("lease release failed", extra={"error": repr(exc)})


def make_elector(config: LeaseConfig, *, identity: str) -> Elector:
    """The elector for ``config`` (``AlwaysLeader`` unless ``ENABLE_HA``)."""
    if not config.enabled:
        return AlwaysLeader()
    if config.backend == "file":
        lease = FileLease(config.file_lock_path, identity=identity, lease_duration=config.lease_duration)
        return LeaderElector(lease, config, identity=identity)
    if config.backend == "redis":
        lease = RedisLease(
            config.redis,
            config.lease_key,
            lease_duration=config.lease_duration,
            identity=identity,
            timeout=config.retry_period,
        )
        return LeaderElector(lease, config, identity=identity)
    if config.backend == "kubernetes":
        from agent_runtime.leader.kubernetes import KubernetesLease  # noqa: PLC0415 optional dependency (kubernetes)

        lease = KubernetesLease(
            config.lease_key,
            config.lease_namespace,
            identity=identity,
            lease_duration=config.lease_duration,
            timeout=config.retry_period,
        )
        return LeaderElector(lease, config, identity=identity)
    if config.backend == "swarm":
        from agent_runtime.leader.swarm import SwarmLease  # noqa: PLC0415 needs the optional docker package

        lease = SwarmLease(
            config.lease_key, lease_duration=config.lease_duration, identity=identity, timeout=config.retry_period
        )
        return LeaderElector(lease, config, identity=identity)
    raise ConfigError(f"HA_BACKEND={config.backend!r} is not available")

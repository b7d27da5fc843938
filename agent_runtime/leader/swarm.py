"""Swarm lease (``HA_BACKEND=swarm``): the lease is a record in the Swarm's raft store.

The record is the labels of a service ``streamspace-lease-<key>`` with no replicas (it never
runs a task; it exists only to hold the labels): ``streamspace.lease-holder`` (the holder's
identity, empty when released), ``streamspace.lease-duration`` (seconds) and, for people
reading ``docker service inspect``, ``streamspace.lease-renewed`` (wall-clock time of the
last renew). Every write is a service update at the version index the writer read
(``POST /services/{id}/update?version=N``); Swarm refuses an update at a stale version
("update out of sequence"), so acquire, renew and release are compare-and-swap operations
and two replicas can never both write themselves in as holder from the same state.

Expiry follows client-go's Lease: a record has no server-side expiry, so a contender
measures it on its own monotonic clock. It notes when it first saw the record's current
version; only when the version has not changed for ``LEASE_DURATION`` (the larger of its
own and the holder's) may it write itself in. The holder's renew that produced that
version started before the contender saw it, and the holder's mandate ends
``RENEW_DEADLINE < LEASE_DURATION`` after that start (:mod:`agent_runtime.leader`), so the
holder has stopped acting before anyone can take the lease over, even if it is paused.

The engine is reached the way the Docker backend reaches it (``DOCKER_HOST``); it must be
a Swarm manager.

See docs/architecture.md §18.3.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from agent_runtime.leader.lease import Lease

LABEL_KEY = "streamspace.lease-key"
LABEL_HOLDER = "streamspace.lease-holder"
LABEL_DURATION = "streamspace.lease-duration"
LABEL_RENEWED = "streamspace.lease-renewed"
LEASE_SERVICE_PREFIX = "streamspace-lease-"
# The record's service never runs (replicas 0), so this image is never pulled.
RECORD_IMAGE = "streamspace-swarm-lease-record:never-run"

_UNSAFE = re.compile(r"[^a-z0-9]+")


def lease_service_name(key: str) -> str:
    """``streamspace-lease-<slug>-<8 hex of sha256(key)>``, at most 63 characters."""
    slug = _UNSAFE.sub("-", key.lower()).strip("-")[:32].strip("-") or "lease"
    return f"{LEASE_SERVICE_PREFIX}{slug}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def is_conflict(exc: Exception) -> bool:
    """Swarm's refusals of a compare-and-swap: a stale version, or a name created meanwhile."""
    text = str(getattr(exc, "explanation", "") or exc)
    return "out of sequence" in text or "AlreadyExists" in text or "already exists" in text


class SwarmLease(Lease):
    def __init__(
        self, key: str, *, lease_duration: float, identity: str = "", timeout: float = 2.0, client: Any = None
    ):
        if client is None:
            try:
                import docker  # noqa: PLC0415 optional dependency (streamspace-agent[docker])
            except ImportError as exc:
                raise RuntimeError("HA_BACKEND=swarm needs the 'docker' package (pip install docker)") from exc
            client = docker.from_env(timeout=max(1, round(timeout)))
        self.key = key
        self.name = lease_service_name(key)
        # A restarted replica must not mistake the record of its previous life for its own.
        self.identity = f"{identity or 'agent'}:{secrets.token_hex(4)}"
        self.lease_duration = lease_duration
        self.client = client
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="swarm-lease")
        self._observed: tuple[int, float] | None = None  # (record version, monotonic time first seen)

    async def _call(self, fn, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    # --- blocking (the lease's thread) ---------------------------------------------------------
    def _read(self) -> dict[str, Any] | None:
        import docker.errors  # noqa: PLC0415 optional dependency, present once a client exists

        try:
            return self.client.api.inspect_service(self.name)
        except docker.errors.NotFound:
            return None

    def _labels(self, holder: str) -> dict[str, str]:
        return {
            LABEL_KEY: self.key,
            LABEL_HOLDER: holder,
            LABEL_DURATION: f"{self.lease_duration:g}",
            LABEL_RENEWED: datetime.now(UTC).isoformat(timespec="milliseconds"),
        }

    def _create(self) -> bool:
        import docker.errors  # noqa: PLC0415 optional dependency, present once a client exists

        try:
            self.client.api.create_service(
                {"ContainerSpec": {"Image": RECORD_IMAGE}, "RestartPolicy": {"Condition": "none"}},
                name=self.name,
                labels=self._labels(self.identity),
                mode={"Replicated": {"Replicas": 0}},
            )
        except docker.errors.APIError as exc:
            if is_conflict(exc):
                return False
            raise
        return True

    def _write(self, record: dict[str, Any], holder: str) -> bool:
        """Compare-and-swap: set the holder at the version read; False if it changed meanwhile."""
        import docker.errors  # noqa: PLC0415 optional dependency, present once a client exists

        spec = record["Spec"]
        try:
            self.client.api.update_service(
                record["ID"],
                record["Version"]["Index"],
                task_template=spec["TaskTemplate"],
                name=spec["Name"],
                labels=self._labels(holder),
                mode=spec["Mode"],
            )
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            if is_conflict(exc):
                return False
            raise
        return True

    def _try_acquire(self) -> bool:
        record = self._read()
        if record is None:
            return self._create()
        labels = record["Spec"].get("Labels") or {}
        holder = labels.get(LABEL_HOLDER, "")
        if holder == self.identity:
            return self._write(record, self.identity)
        version, now = record["Version"]["Index"], time.monotonic()
        if self._observed is None or self._observed[0] != version:
            self._observed = (version, now)
        try:
            duration = max(self.lease_duration, float(labels.get(LABEL_DURATION, "0")))
        except ValueError:
            duration = self.lease_duration
        if holder and now - self._observed[1] < duration:
            return False  # held, and renewed (or first seen) less than a lease duration ago
        return self._write(record, self.identity)

    def _renew(self) -> bool:
        record = self._read()
        if record is None or (record["Spec"].get("Labels") or {}).get(LABEL_HOLDER) != self.identity:
            return False
        return self._write(record, self.identity)

    def _release(self) -> None:
        record = self._read()
        if record is not None and (record["Spec"].get("Labels") or {}).get(LABEL_HOLDER) == self.identity:
            self._write(record, "")

    # --- the Lease contract ------------------------------------------------------------------------
    async def try_acquire(self) -> bool:
        return await self._call(self._try_acquire)

    async def renew(self) -> bool:
        return await self._call(self._renew)

    async def release(self) -> None:
        await self._call(self._release)

    async def holder(self) -> str | None:
        record = await self._call(self._read)
        return ((record or {}).get("Spec", {}).get("Labels") or {}).get(LABEL_HOLDER) or None

    async def close(self) -> None:
        try:
            await self.release()
        finally:
            self._pool.shutdown(wait=False)
            self.client.close()

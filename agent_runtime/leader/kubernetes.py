"""Kubernetes lease: a ``coordination.k8s.io/v1`` Lease, client-go ``leaderelection`` semantics.

* Every write is a ``PUT`` carrying the ``resourceVersion`` read just before (optimistic
  concurrency): of two replicas writing at once, one gets ``409 Conflict`` and loses that
  round, so a lease is never taken over twice.
* Expiry is judged by the *observer's* monotonic clock, as client-go does, never by comparing
  ``renewTime`` with the local wall clock: a follower records when it last saw the record
  change and takes the lease only ``leaseDurationSeconds`` after that. Clock skew between
  nodes cannot shorten a lease.
* The leader's mandate (:class:`~agent_runtime.leader.LeaderElector`) ends ``RENEW_DEADLINE``
  after the start of its last successful renewal, and a follower cannot have seen that
  renewal before it started, so the mandate ends before any follower's expiry
  (``RENEW_DEADLINE < LEASE_DURATION``): a paused leader stops acting before its lease can be
  taken.
* ``release`` (SIGTERM) clears ``holderIdentity`` and sets ``leaseDurationSeconds`` to 1, so a
  follower takes over within a retry period.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from typing import Any

from agent_runtime.backends import kubernetes_client as kc
from agent_runtime.leader.lease import Lease


def _now_micro() -> str:
    """A MicroTime as the API writes it (RFC 3339, microseconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubernetesLease(Lease):
    def __init__(
        self,
        name: str,
        namespace: str,
        *,
        identity: str,
        lease_duration: float,
        timeout: float = 2.0,
        api_client: Any = None,
    ):
        kc.require_client()
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.duration_s = max(1, math.ceil(lease_duration))
        self.timeout = timeout
        self._api_client = api_client if api_client is not None else kc.api_client()  # ConfigError without a cluster
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self.conflicts = 0  # 409s met (tests, logs)

    def _api(self) -> Any:
        return kc.kubernetes.client.CoordinationV1Api(self._api_client)

    def _read(self) -> dict | None:
        try:
            response = self._api().read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=self.timeout
            )
        except kc.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return kc.body(response)

    def _observe(self, lease: dict) -> tuple[str, float]:
        """Record the lease as seen now; return its holder and when it expires (monotonic)."""
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseDurationSeconds"))
        if record != self._observed:
            self._observed = record
            self._observed_at = time.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or self.duration_s)
        return spec.get("holderIdentity") or "", self._observed_at + duration

    def _spec(self, lease: dict | None, *, taking: bool) -> dict:
        old = (lease or {}).get("spec") or {}
        now = _now_micro()
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration_s,
            "acquireTime": now if taking else old.get("acquireTime") or now,
            "renewTime": now,
            "leaseTransitions": int(old.get("leaseTransitions") or 0) + (1 if taking and lease is not None else 0),
        }
        return spec

    def _write(self, lease: dict, spec: dict) -> bool:
        """PUT ``spec`` on the version of ``lease`` we read; False on a conflict."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": lease["metadata"]["resourceVersion"],
            },
            "spec": spec,
        }
        try:
            written = kc.body(
                self._api().replace_namespaced_lease(
                    self.name, self.namespace, body, _preload_content=False, _request_timeout=self.timeout
                )
            )
        except kc.ApiException as exc:
            if exc.status == 409:
                self.conflicts += 1
                return False
            raise
        self._observe(written)
        return True

    def _try_acquire(self) -> bool:
        lease = self._read()
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(None, taking=True),
            }
            try:
                created = self._api().create_namespaced_lease(
                    self.namespace, body, _preload_content=False, _request_timeout=self.timeout
                )
            except kc.ApiException as exc:
                if exc.status == 409:  # another replica created it first
                    self.conflicts += 1
                    return False
                raise
            self._observe(kc.body(created))
            return True
        holder, expires = self._observe(lease)
        if holder == self.identity:
            return self._write(lease, self._spec(lease, taking=False))
        if holder and time.monotonic() < expires:
            return False
        return self._write(lease, self._spec(lease, taking=True))

    def _renew(self) -> bool:
        lease = self._read()
        if lease is None:
            return False
        holder, _ = self._observe(lease)
        if holder != self.identity:
            return False
        return self._write(lease, self._spec(lease, taking=False))

    def _release(self) -> None:
        lease = self._read()
        if lease is None or ((lease.get("spec") or {}).get("holderIdentity") or "") != self.identity:
            return
        spec = {
            **(lease.get("spec") or {}),
            "holderIdentity": None,
            "leaseDurationSeconds": 1,
            "renewTime": _now_micro(),
        }
        self._write(lease, spec)

    async def try_acquire(self) -> bool:
        return await asyncio.to_thread(self._try_acquire)

    async def renew(self) -> bool:
        return await asyncio.to_thread(self._renew)

    async def release(self) -> None:
        await asyncio.to_thread(self._release)

    async def close(self) -> None:
        try:
            await self.release()
        finally:
            await asyncio.to_thread(self._api_client.close)

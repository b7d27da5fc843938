"""Agent configuration from CLI flags and environment variables (docs/architecture.md §9).

Durations are written like Kubernetes/Go durations: ``15s``, ``500ms``, ``1m``, ``1.5s``;
a bare number means seconds. Bad values fail loudly with :class:`ConfigError`.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent_runtime import protocol

if TYPE_CHECKING:
    from agent_runtime.redis_client import RedisTarget

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A flag or environment variable holds a value the agent cannot use."""


def parse_duration(value: str, *, name: str = "duration") -> float:
    """``"15s"`` → 15.0, ``"500ms"`` → 0.5, ``"2m"`` → 120.0, ``"3"`` → 3.0 (seconds)."""
    match = _DURATION.match(str(value))
    if not match:
        raise ConfigError(f"{name}={value!r} is not a duration (examples: 15s, 500ms, 1m)")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{name}={value!r} must be positive")
    return seconds


def parse_bool(value: str | None, *, name: str, default: bool = False) -> bool:
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean (use true/false)")


def default_instance_id() -> str:
    """``<hostname>-<random>``: unique per process, recognisable per host."""
    return f"{socket.gethostname()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class LeaseConfig:
    """Leader election parameters (client-go's leaderelection names)."""

    enabled: bool = False
    backend: str = "file"
    lease_key: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    file_lock_path: str = ""
    redis_url: str = ""
    # REDIS_SENTINELS / REDIS_SENTINEL_MASTER: the lease's master is the one they name; REDIS_URL
    # then gives only password and db (agent_runtime/redis_client.py).
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = ""
    # HA_BACKEND=kubernetes: the Lease's namespace (LEASE_NAMESPACE, else the sessions' namespace).
    lease_namespace: str = "streamspace"

    @classmethod
    def from_env(cls, platform: str, data_dir: Path, env: Mapping[str, str] | None = None) -> LeaseConfig:
        from agent_runtime.redis_client import parse_sentinels  # noqa: PLC0415 it imports ConfigError from here

        env = os.environ if env is None else env
        backend = env.get("HA_BACKEND", "file").strip().lower() or "file"
        # The Kubernetes Lease keeps the name the Helm chart and the design give it.
        default_key = "k8s-agent-leader" if backend == "kubernetes" else f"{platform}-agent-leader"
        lease = cls(
            enabled=parse_bool(env.get("ENABLE_HA"), name="ENABLE_HA"),
            backend=backend,
            lease_key=env.get("LEASE_KEY") or default_key,
            lease_duration=parse_duration(env.get("LEASE_DURATION", "15s"), name="LEASE_DURATION"),
            renew_deadline=parse_duration(env.get("RENEW_DEADLINE", "10s"), name="RENEW_DEADLINE"),
            retry_period=parse_duration(env.get("RETRY_PERIOD", "2s"), name="RETRY_PERIOD"),
            file_lock_path=env.get("FILE_LOCK_PATH") or str(data_dir / f"{platform}-agent-leader.lock"),
            redis_url=env.get("REDIS_URL", ""),
            redis_sentinels=parse_sentinels(env.get("REDIS_SENTINELS", "")),
            redis_sentinel_master=env.get("REDIS_SENTINEL_MASTER", "").strip(),
            lease_namespace=env.get("LEASE_NAMESPACE") or env.get("STREAMSPACE_KUBERNETES_NAMESPACE") or "streamspace",
        )
        lease.validate()
        return lease

    def validate(self) -> None:
        if self.backend not in ("file", "redis", "kubernetes", "swarm"):
            raise ConfigError(
                f"HA_BACKEND={self.backend!r} is not available in this agent (choose file, redis, kubernetes or swarm)"
            )
        if not self.renew_deadline < self.lease_duration:
            raise ConfigError("RENEW_DEADLINE must be shorter than LEASE_DURATION")
        if not self.retry_period < self.renew_deadline:
            raise ConfigError("RETRY_PERIOD must be shorter than RENEW_DEADLINE")
        redis = self.redis  # validates REDIS_URL / REDIS_SENTINELS / REDIS_SENTINEL_MASTER together
        if self.enabled and self.backend == "redis" and redis is None:
            raise ConfigError("HA_BACKEND=redis needs REDIS_URL or REDIS_SENTINELS")

    @property
    def redis(self) -> RedisTarget | None:
        """Where the redis lease lives (None without REDIS_URL and REDIS_SENTINELS)."""
        from agent_runtime.redis_client import RedisTarget  # noqa: PLC0415 it imports ConfigError from here

        sentinels = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.redis_sentinels)
        return RedisTarget.build(self.redis_url, sentinels, self.redis_sentinel_master)


@dataclass(frozen=True)
class AgentConfig:
    """Everything the running agent needs; built by the CLI."""

    control_plane: str
    token: str
    agent_id: str
    platform: str
    instance_id: str
    data_dir: Path
    lease: LeaseConfig = field(default_factory=LeaseConfig)
    backend_options: dict[str, str] = field(default_factory=dict)
    max_sessions: int = 0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    drain_timeout: float = 30.0

    @property
    def connect_url(self) -> str:
        return self.connect_urls[0]

    @property
    def connect_urls(self) -> list[str]:
        """Every control-plane replica the agent may use (``--control-plane`` is comma-separated);
        after a failed or lost connection the agent moves on to the next one."""
        return [connect_url(url) for url in self.control_plane.split(",") if url.strip()]


def connect_url(control_plane: str, path: str = protocol.CONNECT_PATH) -> str:
    """``http://cp:8000`` → ``ws://cp:8000/api/v1/agents/connect`` (https → wss)."""
    base = control_plane.strip().rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    elif not base.startswith(("ws://", "wss://")):
        raise ConfigError(f"control plane URL {control_plane!r} must start with http://, https://, ws:// or wss://")
    return base + path

"""The backend contract (JupyterHub's Spawner, reduced to what a session needs).

Every method is idempotent per ``session_id``: the control plane re-sends commands until
they are acknowledged and the agent may be restarted at any moment, so

* ``start`` of a running session returns its status; of a stopped-but-existing workload
  starts it again; of a missing one creates it.
* ``stop`` removes the workload (the user's home is kept unless ``delete_home``); stopping
  a session that does not exist is a no-op that reports ``stopped``.
* ``hibernate`` scales the workload to zero and keeps everything needed to wake it;
  hibernating a hibernated session is a no-op; a session that does not exist raises
  :class:`BackendError` (there is nothing to keep).
* ``wake`` starts a hibernated workload; a running one is returned as is; a missing one is
  re-created from ``spec`` (wake carries the full start spec), so a home survives.
* ``status`` and ``inventory`` only observe. ``inventory`` lists the sessions this agent
  manages (including ones started before a restart) and never creates or deletes anything.

All methods return protocol :class:`~agent_runtime.protocol.InventoryItem` values.
``streaming_ready`` is true only once the session's port answers HTTP. Methods must not
block the event loop: blocking client libraries run in an executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from agent_runtime.protocol import Capacity, InventoryItem


class BackendError(Exception):
    """A command the backend cannot carry out; the message goes to the user as is."""


class VolumeMount(msgspec.Struct, forbid_unknown_fields=False):
    name: str
    mount_path: str
    read_only: bool = False


class SessionSpec(msgspec.Struct, forbid_unknown_fields=False):
    """What a command's ``spec`` may hold (``sessions_app.services.start_spec`` writes it)."""

    image: str = ""
    command: list[str] = msgspec.field(default_factory=list)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    cpu_millicores: int = 0
    memory_mb: int = 0
    persistent_home: bool = True
    streaming_port: int = 8080
    volume_mounts: list[VolumeMount] = msgspec.field(default_factory=list)
    user: str = ""
    template: str = ""
    delete_home: bool = False
    home_mount_path: str = ""

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> SessionSpec:
        """Validate a command's spec; bad types raise :class:`BackendError` naming the field."""
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise BackendError("spec must be an object")
        try:
            spec = msgspec.convert(dict(raw), cls)
        except msgspec.ValidationError as exc:
            raise BackendError(f"invalid spec: {exc}") from None
        if spec.cpu_millicores < 0 or spec.memory_mb < 0:
            raise BackendError("invalid spec: cpu_millicores and memory_mb must not be negative")
        if not 1 <= spec.streaming_port <= 65535:
            raise BackendError("invalid spec: streaming_port must be between 1 and 65535")
        return spec

    def require_user(self) -> str:
        if not self.user:
            raise BackendError("spec is missing 'user' (the session owner's username)")
        return self.user


class Backend(ABC):
    """Runs session workloads on one platform. Subclasses set ``platform``."""

    platform: ClassVar[str]

    def __init__(self, *, agent_id: str, data_dir: Path, options: Mapping[str, str] | None = None):
        self.agent_id = agent_id
        self.data_dir = Path(data_dir)
        self.options = dict(options or {})

    @abstractmethod
    async def start(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        """Create (or start again) the session's workload and return its status."""

    @abstractmethod
    async def stop(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        """Remove the workload; keep the home unless ``spec.delete_home``. Returns state ``stopped``."""

    @abstractmethod
    async def hibernate(self, session_id: str) -> InventoryItem:
        """Scale to zero keeping the workload's definition and home. Returns state ``hibernated``."""

    @abstractmethod
    async def wake(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        """Start a hibernated workload again (re-create it from ``spec`` if it vanished)."""

    @abstractmethod
    async def status(self, session_id: str) -> InventoryItem:
        """Observe one session; a session this backend does not have reports ``stopped``."""

    @abstractmethod
    async def inventory(self) -> list[InventoryItem]:
        """Every session this agent manages on this platform, without changing anything."""

    async def capacity(self) -> Capacity:
        """What this host offers (reported in ``register`` and heartbeats)."""
        return host_capacity()

    async def close(self) -> None:  # noqa: B027  (optional hook)
        """Release clients and executors; running sessions keep running."""


def host_capacity(max_sessions: int = 0) -> Capacity:
    memory_mb = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    memory_mb = int(line.split()[1]) // 1024
                    break
    except OSError:
        pass
    return Capacity(cpu_millicores=(os.cpu_count() or 1) * 1000, memory_mb=memory_mb, sessions=max_sessions)


async def http_answers(host: str, port: int, *, timeout: float = 1.0, path: str = "/") -> bool:
    """True when ``host:port`` answers an HTTP request with any status line."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: streamspace-agent\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.startswith(b"HTTP/")
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

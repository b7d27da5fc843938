"""File lease: a record ``{"holder", "deadline", "host", "pid"}`` in ``FILE_LOCK_PATH``, changed
only under a short ``flock`` (replicas on one host, or a shared file system with working
flock and clocks in step).

It is a lease, not a held lock: the holder must renew it before ``deadline`` (wall clock,
``LEASE_DURATION`` after its last renew), and any replica may take it once the deadline has
passed. So a holder that hangs (a SIGSTOP-paused process, a stuck event loop) loses it like
one that died, and the elector's renew-deadline rule (``agent_runtime.leader``) makes it stop
acting before the lease can be taken. A holder that died is recognised at once when it ran
on the same host (same ``hostname``, its ``pid`` gone), so a ``kill -9`` does not wait for
the deadline; a holder on another host is trusted until its deadline.

The ``flock`` is held only for one read-modify-write and is taken without blocking the event
loop (``LOCK_NB``, retried for :data:`LOCK_WAIT_S`); a process stopped inside those few
microseconds would keep others out until it resumes or dies (the kernel then releases it).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agent_runtime.leader.lease import Lease

LOCK_WAIT_S = 1.0


class FileLease(Lease):
    def __init__(self, path: str | os.PathLike[str], *, identity: str = "", lease_duration: float = 15.0):
        self.path = Path(path)
        self.identity = identity
        self.lease_duration = lease_duration
        self.token = f"{identity}:{secrets.token_hex(8)}"
        self.host = socket.gethostname()

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            give_up = time.monotonic() + LOCK_WAIT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= give_up:
                        raise TimeoutError(f"{self.path} stayed locked for {LOCK_WAIT_S} s") from None
                    await asyncio.sleep(0.005)
            yield fd
        finally:
            os.close(fd)  # closing releases the flock

    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        raw = os.pread(fd, 4096, 0)
        try:
            record = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return {}  # a torn or foreign file is a free lease
        return record if isinstance(record, dict) else {}

    def _write(self, fd: int, record: dict[str, Any]) -> None:
        data = json.dumps(record).encode() if record else b""
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)

    def _free(self, record: dict[str, Any]) -> bool:
        """Nobody holds ``record``: empty, expired, or its holder died on this host."""
        if not record.get("holder"):
            return True
        deadline = record.get("deadline")
        if not isinstance(deadline, (int, float)) or time.time() >= deadline:
            return True
        pid = record.get("pid")
        if record.get("host") == self.host and isinstance(pid, int) and pid != os.getpid():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False  # alive, owned by another user
        return False

    def _mine(self) -> dict[str, Any]:
        return {
            "holder": self.token,
            "identity": self.identity,
            "deadline": time.time() + self.lease_duration,
            "host": self.host,
            "pid": os.getpid(),
        }

    async def try_acquire(self) -> bool:
        async with self._locked() as fd:
            record = self._read(fd)
            if record.get("holder") != self.token and not self._free(record):
                return False
            self._write(fd, self._mine())
            return True

    async def renew(self) -> bool:
        async with self._locked() as fd:
            record = self._read(fd)
            if record.get("holder") != self.token or time.time() >= record.get("deadline", 0):
                return False  # taken over, or expired (someone may be taking it right now)
            self._write(fd, self._mine())
            return True

    async def release(self) -> None:
        async with self._locked() as fd:
            if self._read(fd).get("holder") == self.token:
                self._write(fd, {})

    async def holder(self) -> str | None:
        """The identity holding the lease now, or None."""
        async with self._locked() as fd:
            record = self._read(fd)
        return None if self._free(record) else str(record.get("identity", ""))

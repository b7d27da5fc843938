"""File lease: an exclusive ``flock`` on ``FILE_LOCK_PATH`` (replicas on one host or a shared
file system with working flock).

The kernel releases the lock when the holder dies (even on ``kill -9``), so there is no
expiry to wait for. Renew checks that the lock file is still the one we locked (someone
deleting it would otherwise let a second replica lock a fresh file).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from agent_runtime.leader.lease import Lease


class FileLease(Lease):
    def __init__(self, path: str | os.PathLike[str], *, identity: str = ""):
        self.path = Path(path)
        self.identity = identity
        self._fd: int | None = None

    async def try_acquire(self) -> bool:
        if self._fd is not None:
            return await self.renew()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        if not await self.renew():  # the file was replaced between open and flock
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.identity}\n".encode(), 0)
        return True

    async def renew(self) -> bool:
        if self._fd is None:
            return False
        try:
            same = os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            await self.release()
        return same

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

"""Files in a local session's home directory, confined to it (docs/architecture.md §23).

The agent and the session share one file system, and the session's user may change its home
while the agent works in it (swap a directory for a link between the agent's check and its
use). So every check is made on what was actually opened: a path is resolved
(``os.path.realpath``) and opened, then the kernel says where the open descriptor really is
(``/proc/self/fd/<n>``) and anything outside the home is refused. Writes and deletes act
through the descriptor of the checked parent directory (``dir_fd``), never through a path
that could be re-resolved; a new file is created with ``O_EXCL | O_NOFOLLOW`` under a
temporary name and renamed into place, so a file appears whole or not at all.

Blocking calls run in the default executor (:func:`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path

from agent_runtime.backends.homefiles import (
    CHUNK,
    MAX_LIST_ENTRIES,
    HomeEntry,
    HomeFile,
    HomePathConflict,
    HomePathEscape,
    HomePathInvalid,
    HomePathNotFound,
    HomeUploadIncomplete,
)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_ESCAPE = "The path leads outside the session's home."


def entry_type(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def _entry(name: str, st: os.stat_result) -> HomeEntry:
    return HomeEntry(name=name, type=entry_type(st.st_mode), size=st.st_size, mtime=st.st_mtime)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class LocalHome:
    """One home directory; every method refuses a path whose resolution leaves it."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        try:
            self.real = os.path.realpath(self.home, strict=True)
        except OSError:
            raise HomePathNotFound("The session's home directory does not exist.") from None

    # -- checks ---------------------------------------------------------------------------
    def _inside(self, real: str) -> bool:
        return real == self.real or real.startswith(self.real.rstrip("/") + "/")

    def _open_checked(self, parts: tuple[str, ...], flags: int) -> int:
        """Open ``parts`` (resolved) and return the descriptor if it really is in the home."""
        resolved = os.path.realpath(os.path.join(self.real, *parts))
        if not self._inside(resolved):
            raise HomePathEscape(_ESCAPE)
        try:
            fd = os.open(resolved, flags | os.O_CLOEXEC)
        except FileNotFoundError:
            raise HomePathNotFound("No such file or directory in the home.") from None
        except NotADirectoryError:
            raise HomePathConflict("A part of the path is not a directory.") from None
        except PermissionError:
            raise HomePathEscape("The agent may not open this path.") from None
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            os.close(fd)
            raise
        if not self._inside(where):
            os.close(fd)
            raise HomePathEscape(_ESCAPE)
        return fd

    # -- operations (blocking; called through asyncio.to_thread) --------------------------
    def _stat(self, parts: tuple[str, ...]) -> HomeEntry:
        fd = self._open_checked(parts, os.O_RDONLY | os.O_NONBLOCK)
        try:
            return _entry(parts[-1] if parts else "", os.fstat(fd))
        finally:
            os.close(fd)

    def _list(self, parts: tuple[str, ...]) -> list[HomeEntry]:
        try:
            fd = self._open_checked(parts, _DIR_FLAGS)
        except HomePathConflict:
            raise HomePathConflict("Not a directory.") from None
        entries: list[HomeEntry] = []
        try:
            with os.scandir(fd) as it:
                for item in it:
                    try:
                        entries.append(_entry(item.name, item.stat(follow_symlinks=False)))
                    except OSError:
                        continue  # removed meanwhile
                    if len(entries) >= MAX_LIST_ENTRIES:
                        break
        finally:
            os.close(fd)
        entries.sort(key=lambda e: (e.type != "directory", e.name))
        return entries

    def _open_file(self, parts: tuple[str, ...]) -> tuple[int, os.stat_result]:
        fd = self._open_checked(parts, os.O_RDONLY | os.O_NONBLOCK)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise HomePathConflict("Not a regular file." if not stat.S_ISDIR(st.st_mode) else "This is a directory.")
        os.set_blocking(fd, True)
        return fd, st

    def _parent(self, parts: tuple[str, ...]) -> tuple[int, str]:
        """The checked parent directory's descriptor and the last name (the home itself has none)."""
        if not parts:
            raise HomePathInvalid("The home itself cannot be written or deleted.")
        try:
            return self._open_checked(parts[:-1], _DIR_FLAGS), parts[-1]
        except HomePathNotFound:
            raise HomePathNotFound("The folder to put it in does not exist.") from None

    def _write_target(self, parts: tuple[str, ...]) -> tuple[int, str]:
        """Where a write to ``parts`` goes: through a link inside the home to its target."""
        resolved = os.path.realpath(os.path.join(self.real, *parts))
        if not self._inside(resolved) or resolved == self.real:
            raise HomePathEscape(_ESCAPE) if not self._inside(resolved) else HomePathConflict("This is a directory.")
        relative = tuple(os.path.relpath(resolved, self.real).split(os.sep))
        pfd, name = self._parent(relative)
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return pfd, name
        except OSError:
            os.close(pfd)
            raise
        if stat.S_ISDIR(st.st_mode):
            os.close(pfd)
            raise HomePathConflict("A directory has this name.")
        return pfd, name

    def _create_temp(self, pfd: int, name: str) -> tuple[int, str]:
        temp = f".{name[:200]}.upload-{secrets.token_hex(6)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=pfd)
        if os.geteuid() == 0:  # files the agent writes as root belong to the home's owner
            owner = os.fstat(pfd)
            os.fchown(fd, owner.st_uid, owner.st_gid)
        return fd, temp

    def _delete(self, parts: tuple[str, ...]) -> None:
        pfd, name = self._parent(parts)
        try:
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                raise HomePathNotFound("No such file or directory in the home.") from None
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=pfd)
            else:
                os.unlink(name, dir_fd=pfd)
        finally:
            os.close(pfd)

    # -- the async contract -----------------------------------------------------------------
    async def stat(self, parts: tuple[str, ...]) -> HomeEntry:
        return await asyncio.to_thread(self._stat, parts)

    async def list(self, parts: tuple[str, ...]) -> list[HomeEntry]:
        return await asyncio.to_thread(self._list, parts)

    async def read(self, parts: tuple[str, ...]) -> HomeFile:
        fd, st = await asyncio.to_thread(self._open_file, parts)

        async def chunks() -> AsyncIterator[bytes]:
            while data := await asyncio.to_thread(os.read, fd, CHUNK):
                yield data

        return HomeFile(st.st_size, st.st_mtime, chunks(), close=lambda: os.close(fd))

    async def write(self, parts: tuple[str, ...], size: int, body: AsyncIterator[bytes]) -> HomeEntry:
        pfd, name = await asyncio.to_thread(self._write_target, parts)
        try:
            fd, temp = await asyncio.to_thread(self._create_temp, pfd, name)
            done = False
            try:
                written = 0
                try:
                    async for chunk in body:
                        written += len(chunk)
                        if written > size:
                            raise HomeUploadIncomplete("The upload is longer than announced.")
                        await asyncio.to_thread(_write_all, fd, chunk)
                finally:
                    os.close(fd)
                if written != size:
                    raise HomeUploadIncomplete(f"The upload ended after {written} of {size} bytes.")
                await asyncio.to_thread(os.rename, temp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
                done = True
                st = await asyncio.to_thread(os.stat, name, dir_fd=pfd, follow_symlinks=False)
                return _entry(name, st)
            finally:
                if not done:
                    with contextlib.suppress(OSError):
                        os.unlink(temp, dir_fd=pfd)
        finally:
            os.close(pfd)

    async def delete(self, parts: tuple[str, ...]) -> None:
        await asyncio.to_thread(self._delete, parts)

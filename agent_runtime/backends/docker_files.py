"""Files in a Docker session's home, resolved inside the container (docs/architecture.md §23).

The home is the container's mount of the user's home volume (else the image's ``HOME``).
Links are resolved where they mean something, inside the container: a POSIX ``sh`` script
(:data:`.homescript.SCRIPT`, shared with the Kubernetes backend) run with ``docker exec``
resolves a path with ``realpath``, refuses one that leaves the home, lists (``stat``), renames
(``mv``) and deletes (``rm``); those tools come from coreutils or, where an image only has the
``busybox`` binary, its applets. The exec runs
as the container's user, so it reaches what the session's user may.

Bytes move through the engine's archive API, streamed: a download is the tar stream of
``get_archive`` read member by member (``tarfile`` in stream mode), an upload a tar stream
built on the fly for ``put_archive`` (one member, a temporary name beside the target,
owned by the target directory's owner), renamed into place once complete.

The archive API runs as root and follows links in the *intermediate* components of the path
it is given (within the container's root). Only paths the script resolved are given to it,
but a session's user who swaps a directory for a link between the script and the transfer
can reach files of their own container that root may read; the local backend has no such
gap (``local_files.py``). It never reaches outside the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
import tarfile
import time
from collections.abc import AsyncIterator
from typing import Any

from agent_runtime.backends.homefiles import (
    CHUNK,
    HomeEntry,
    HomeFile,
    HomeFileError,
    HomePathConflict,
    HomeUploadIncomplete,
    join,
)
from agent_runtime.backends.homescript import command, parse_listing, parse_stat, refusal

__all__ = ["DockerHome", "StreamReader", "parse_listing", "parse_stat", "tar_header"]


def tar_header(name: str, size: int, uid: int, gid: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uid, info.gid = size, 0o644, int(time.time()), uid, gid
    return info.tobuf(format=tarfile.PAX_FORMAT)


class StreamReader(io.RawIOBase):
    """A blocking file object over an iterator of byte chunks (for ``tarfile`` in stream mode)."""

    def __init__(self, chunks: Any) -> None:
        self._chunks = iter(chunks)
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            try:
                self._rest = next(self._chunks)
            except StopIteration:
                return 0
        count = min(len(buffer), len(self._rest))
        buffer[:count] = self._rest[:count]
        self._rest = self._rest[count:]
        return count


class DockerHome:
    """The home of one running session container."""

    def __init__(self, container: Any, home: str) -> None:
        self.container = container
        self.home = home

    def _exec(self, op: str, parts: tuple[str, ...], *extra: str) -> bytes:
        """Run the script (blocking); its output after ``OK``, or the error it names."""
        code, (out, err) = self.container.exec_run(command(op, self.home, join(parts), *extra), demux=True)
        out = out or b""
        error = refusal(out)
        if error is not None:
            raise error
        if code != 0 or not out.startswith(b"OK"):
            detail = (err or out or b"").decode("utf-8", "replace").strip()[:300]
            raise HomeFileError(f"The container could not carry out the file operation: {detail}")
        return out[3:]  # after "OK " or "OK\n"

    async def stat(self, parts: tuple[str, ...]) -> HomeEntry:
        out = await asyncio.to_thread(self._exec, "stat", parts)
        line = out.decode("utf-8", "surrogateescape").split("\n", 1)[0]
        return parse_stat(line, parts[-1] if parts else "")

    async def list(self, parts: tuple[str, ...]) -> list[HomeEntry]:
        out = await asyncio.to_thread(self._exec, "list", parts)
        directory, _, rest = out.partition(b"\n")
        return parse_listing(rest, directory.decode("utf-8", "surrogateescape"))

    def _open(self, resolved: str) -> tuple[Any, Any, Any]:
        stream, _ = self.container.get_archive(resolved, chunk_size=CHUNK)
        tar = tarfile.open(fileobj=io.BufferedReader(StreamReader(stream), CHUNK), mode="r|")  # noqa: SIM115 closed with the HomeFile
        member = tar.next()
        if member is None or not member.isreg():
            tar.close()
            raise HomePathConflict("Not a regular file.")
        return tar, member, tar.extractfile(member)

    async def read(self, parts: tuple[str, ...]) -> HomeFile:
        out = (await asyncio.to_thread(self._exec, "stat", parts)).decode("utf-8", "surrogateescape")
        line, resolved = out.split("\n")[:2]
        entry = parse_stat(line, parts[-1] if parts else "")
        if entry.type == "directory":
            raise HomePathConflict("This is a directory.")
        tar, member, handle = await asyncio.to_thread(self._open, resolved)

        async def chunks() -> AsyncIterator[bytes]:
            while data := await asyncio.to_thread(handle.read, CHUNK):
                yield data

        return HomeFile(member.size, float(member.mtime), chunks(), close=tar.close)

    async def write(self, parts: tuple[str, ...], size: int, body: AsyncIterator[bytes]) -> HomeEntry:
        out = (await asyncio.to_thread(self._exec, "put", parts)).decode("utf-8", "surrogateescape")
        owner, directory, name = out.split("\n")[:3]
        uid, gid = (int(v) for v in owner.split(":"))
        temp = f".{name[:200]}.upload-{secrets.token_hex(6)}"
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=8)
        failed = False

        def tar_stream() -> Any:
            yield tar_header(temp, size, uid, gid)
            while True:
                chunk = asyncio.run_coroutine_threadsafe(queue.get(), loop).result()
                if chunk is None:
                    break
                yield chunk
            if failed:
                raise HomeUploadIncomplete("The upload ended early.")
            yield b"\0" * ((-size) % 512) + b"\0" * 1024

        transfer = asyncio.ensure_future(asyncio.to_thread(self.container.put_archive, directory, tar_stream()))

        async def hand_over(item: bytes | None) -> bool:
            """Queue ``item`` for the transfer thread; False if the transfer ended first."""
            put = asyncio.ensure_future(queue.put(item))
            done, _ = await asyncio.wait({put, transfer}, return_when=asyncio.FIRST_COMPLETED)
            if put not in done:
                put.cancel()
                return False
            return True

        written = 0
        try:
            try:
                async for chunk in body:
                    written += len(chunk)
                    if written > size or not await hand_over(chunk):
                        break
            finally:
                failed = written != size
                await hand_over(None)
            try:
                await transfer
            except Exception as exc:
                if failed:
                    raise HomeUploadIncomplete(f"The upload ended after {written} of {size} bytes.") from None
                raise HomeFileError(f"The container refused the upload: {exc}") from None
            if failed:
                raise HomeUploadIncomplete(f"The upload ended after {written} of {size} bytes.")
            await asyncio.to_thread(self._exec, "finish", parts, directory, temp, name)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._exec, "abort", parts, directory, temp)
            raise
        return HomeEntry(name=name, type="file", size=size, mtime=time.time())

    async def delete(self, parts: tuple[str, ...]) -> None:
        await asyncio.to_thread(self._exec, "delete", parts)

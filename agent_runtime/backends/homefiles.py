"""Files in a session's home: the path rule, the values and the errors every backend shares
(docs/architecture.md §23; no Django import).

A *home path* is relative to the session's home directory: components separated by ``/``,
none empty, ``.`` or ``..``, no NUL, none longer than 255 bytes, at most 4096 bytes in all;
the empty path is the home itself. :func:`parse_home_path` is the one check, used by the
control plane before it asks and by the agent before it acts.

A syntactically clean path can still leave the home through a symbolic link. Each backend
resolves the path *inside the session's own file system* (the agent's for a local session,
the container's or pod's for the others) and refuses with :class:`HomePathEscape` a path
whose resolution is not the home or below it. What each operation resolves:

* read and list: the whole path (a link inside the home that points inside is followed);
* write: the whole path as far as it exists; the parent directory must exist;
* delete: the parent directory; the entry itself is removed, never followed (deleting a
  link removes the link).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
MAX_LIST_ENTRIES = 10_000
CHUNK = 256 * 1024

ENTRY_TYPES = ("file", "directory", "link", "other")


class HomeEntry(msgspec.Struct, frozen=True):
    """One entry of a home directory (or the target of a path): ``type`` is ``file``,
    ``directory``, ``link`` (a symbolic link, not followed in listings) or ``other``;
    ``mtime`` in seconds since the epoch."""

    name: str
    type: str
    size: int
    mtime: float


class HomeFile:
    """An open file of a home: its ``size`` and ``mtime``, and its bytes by :meth:`chunks`.

    Whoever opens one closes it (:meth:`aclose`), also when the transfer is abandoned.
    """

    def __init__(self, size: int, mtime: float, chunks: AsyncIterator[bytes], close: object = None) -> None:
        self.size = size
        self.mtime = mtime
        self._chunks = chunks
        self._close = close

    def chunks(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def aclose(self) -> None:
        close = self._close
        self._close = None
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()
        if callable(close):
            result = close()
            if hasattr(result, "__await__"):
                await result


class HomeFileError(Exception):
    """A file operation the backend refuses; ``code`` and ``status`` go to the user as is."""

    code = "home_file_error"
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HomePathInvalid(HomeFileError):
    code, status = "invalid_path", 400


class HomePathEscape(HomeFileError):
    code, status = "path_outside_home", 403


class HomePathNotFound(HomeFileError):
    code, status = "not_found", 404


class HomePathConflict(HomeFileError):
    """The path is of the wrong kind for the operation (a directory to write, a file to list)."""

    code, status = "conflict", 409


class HomeNotAvailable(HomeFileError):
    """The session's workload is not running, so its home cannot be reached."""

    code, status = "session_not_running", 409


class HomeUploadIncomplete(HomeFileError):
    """The upload ended before its announced size (nothing was written)."""

    code, status = "upload_incomplete", 400


class HomeFilesUnsupported(HomeFileError):
    code, status = "files_unsupported", 501


def parse_home_path(path: str) -> tuple[str, ...]:
    """The components of a home path; :class:`HomePathInvalid` if it is not one (pure).

    A trailing ``/`` is allowed (``docs/`` is ``docs``); a leading one is not (absolute).
    """
    if not isinstance(path, str):
        raise HomePathInvalid("The path must be text.")
    if "\x00" in path:
        raise HomePathInvalid("The path contains a NUL byte.")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise HomePathInvalid("The path is not valid UTF-8.") from None
    if size > MAX_PATH_BYTES:
        raise HomePathInvalid(f"The path is longer than {MAX_PATH_BYTES} bytes.")
    if path.startswith("/"):
        raise HomePathInvalid("The path must be relative to the home, not absolute.")
    if path.endswith("/"):
        path = path[:-1]
    if not path:
        return ()
    parts = tuple(path.split("/"))
    for part in parts:
        if part in ("", ".", ".."):
            raise HomePathInvalid("The path may not contain empty, '.' or '..' components.")
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise HomePathInvalid(f"A name in the path is longer than {MAX_NAME_BYTES} bytes.")
        if any(ord(c) < 32 or ord(c) == 127 for c in part):
            raise HomePathInvalid("The path contains a control character.")
    return parts


def join(parts: tuple[str, ...]) -> str:
    return "/".join(parts)

"""Files in a Kubernetes session's home, resolved inside the pod (docs/architecture.md §23).

The home is the session container's ``home`` volume mount (the user's PVC, or an
``emptyDir`` without a persistent home). Everything happens through the pod's ``exec``
subresource, as ``kubectl exec`` / ``kubectl cp`` do: the real client's WebSocket
(``kubernetes.stream.stream``, subprotocol ``v4.channel.k8s.io`` or ``v5``: channel 0 stdin,
1 stdout, 2 stderr, 3 the final ``Status`` with the exit code) runs
:data:`.homescript.SCRIPT` in the session container, as the pod's user. It resolves every
path with ``realpath`` inside the container and refuses one that leaves the home; since the
exec has the session user's rights and no more, a link swapped in between two steps reaches
nothing that user could not read or write anyway.

Bytes stream both ways, never whole in memory:

* download: the script's ``read`` prints ``OK`` and ``exec``s ``tar -c`` of the resolved file;
  the tar stream is read member by member (``tarfile`` in stream mode) from the stdout frames
  as they arrive, one ``homefiles.CHUNK`` at a time, so the size announced is the one the
  content matches (tar's header);
* upload: the script's ``write`` creates ``.ss-upload-<token>`` beside the target and copies
  exactly ``size`` bytes of stdin into it with ``head -c`` (v4 cannot close stdin, so the end
  is known from the size), checks the size and renames it into place. The agent sends each
  chunk of the body as one stdin frame and reads the next only once it is sent, so an upload
  holds one chunk (and the client's framed copy of it) at a time. A short or failed upload
  closes the connection, which ends the command's stdin: the script removes the temporary
  file, and the agent runs ``abort`` as well; nothing appears at the target.

Frames are read from the client's socket directly (``websocket-client``'s
``recv_data_frame``): the ``WSClient`` buffers would also keep a copy of everything received.
Each exec gets an ``ApiClient`` of its own, because ``stream`` swaps the request method of
the client it is given while it connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import re
import secrets
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

try:  # installed with the kubernetes client (pip install streamspace-agent[kubernetes])
    from websocket import ABNF, WebSocketException
except ImportError:
    ABNF = None
    WebSocketException = OSError  # type: ignore[misc,assignment]

from agent_runtime.backends.docker_files import StreamReader
from agent_runtime.backends.homefiles import (
    CHUNK,
    MAX_LIST_ENTRIES,
    HomeEntry,
    HomeFile,
    HomeFileError,
    HomeNotAvailable,
    HomePathConflict,
    HomeUploadIncomplete,
    join,
)
from agent_runtime.backends.homescript import command, parse_listing, parse_stat, refusal

STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255
MAX_OUTPUT = 16 * 1024 * 1024  # a listing of MAX_LIST_ENTRIES long names fits
MAX_STDERR = 4096
SOCKET_TIMEOUT_S = 120.0  # an exec that sends nothing for this long is abandoned
_HANDSHAKE = re.compile(r"Handshake status (\d{3})")


class PodExec:
    """One exec's WebSocket: stdout frames as they arrive; stderr and the final status kept."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.sock = client.sock
        self.sock.settimeout(SOCKET_TIMEOUT_S)
        self.stderr = b""
        self.status = b""
        self.closed = False
        self.pending = b""  # stdout read past the first line, handed out before the next frame

    def next_stdout(self) -> bytes | None:
        """The next piece of stdout (blocking); None once the exec has ended."""
        if self.pending:
            piece, self.pending = self.pending, b""
            return piece
        while not self.closed:
            try:
                opcode, frame = self.sock.recv_data_frame(True)
            except (WebSocketException, OSError):
                self.closed = True
                break
            if opcode == ABNF.OPCODE_CLOSE:
                self.closed = True
                break
            if opcode not in (ABNF.OPCODE_BINARY, ABNF.OPCODE_TEXT) or not frame.data:
                continue
            data = frame.data if isinstance(frame.data, bytes) else frame.data.encode()
            channel, payload = data[0], data[1:]
            if channel == STDOUT and payload:
                return payload
            if channel == STDERR:
                self.stderr = (self.stderr + payload)[:MAX_STDERR]
            elif channel == ERROR:
                self.status += payload
        return None

    def stdout(self) -> Iterator[bytes]:
        while (piece := self.next_stdout()) is not None:
            yield piece

    def send_stdin(self, data: bytes) -> None:
        """One stdin frame (blocking until the socket took it: the transfer's back-pressure)."""
        try:
            self.sock.send(bytes([STDIN]) + data, opcode=ABNF.OPCODE_BINARY)
        except (WebSocketException, OSError) as exc:
            raise HomeFileError(f"The upload to the pod failed: {exc}") from None

    def exit_code(self) -> int | None:
        """The command's exit status from the final Status (None when none came)."""
        try:
            status = json.loads(self.status or b"null")
        except ValueError:
            return None
        if not isinstance(status, dict):
            return None
        if status.get("status") == "Success":
            return 0
        with contextlib.suppress(LookupError, TypeError, ValueError):
            return int(status["details"]["causes"][0]["message"])
        return None

    def detail(self) -> str:
        """What went wrong, in the container's or the API server's words."""
        message = self.stderr.decode("utf-8", "replace").strip()
        if not message and self.status:
            with contextlib.suppress(ValueError, AttributeError):
                message = json.loads(self.status).get("message") or ""
        return message[:300]

    def close(self) -> None:
        """Close the WebSocket (a close frame when it can) and its socket, whatever state it is in."""
        self.closed = True
        with contextlib.suppress(Exception):
            self.client.close()
        with contextlib.suppress(Exception):
            self.sock.shutdown()  # the client skips this for a connection it already saw end


def open_error(exc: Exception) -> HomeFileError:
    """A failed exec handshake as the user's error: the pod is gone or not running (409), the
    agent may not exec (403 from RBAC), or the API server cannot be reached."""
    text = str(getattr(exc, "reason", "") or exc)
    match = _HANDSHAKE.search(text)
    code = int(match[1]) if match else None
    if code in (400, 404):
        return HomeNotAvailable("The session's pod is not running (it may be starting or stopping).")
    if code == 403:
        return HomeFileError(
            "kubernetes: the agent may not exec into session pods "
            "(its Role needs pods/exec get and create: see the Helm chart)."
        )
    return HomeFileError(f"kubernetes: exec into the session's pod failed: {text[:300]}")


class PodHome:
    """The home of one running session pod: ``open_exec(argv, stdin)`` opens an exec (blocking)."""

    def __init__(self, open_exec: Any, home: str) -> None:
        self._open_exec = open_exec
        self.home = home

    def _start(self, op: str, parts: tuple[str, ...], *extra: str, stdin: bool = False) -> PodExec:
        try:
            return PodExec(self._open_exec(command(op, self.home, join(parts), *extra), stdin))
        except HomeFileError:
            raise
        except Exception as exc:
            raise open_error(exc) from None

    @staticmethod
    def _first_line(execution: PodExec) -> bytes:
        """The script's first line (``OK ...``; what follows it stays in the exec's stdout);
        raises the refusal or the transport's failure."""
        buffer = b""
        while b"\n" not in buffer:
            piece = execution.next_stdout()
            if piece is None:
                break
            buffer += piece
            if len(buffer) > MAX_OUTPUT:
                break
        line, _, rest = buffer.partition(b"\n")
        error = refusal(line)
        if error is not None:
            execution.close()
            raise error
        if not line.startswith(b"OK"):
            for _ in execution.stdout():  # the final status follows the output
                pass
            execution.close()
            raise HomeFileError(f"The pod could not carry out the file operation: {execution.detail()}")
        execution.pending = rest
        return line

    def _run(self, op: str, parts: tuple[str, ...], *extra: str, records: int = 0) -> bytes:
        """Run the script to its end (blocking); its output after ``OK``, or the error it names.

        With ``records``, the output is complete once it holds that many NUL-ended records (a
        listing of ``MAX_LIST_ENTRIES``): the exec is closed there, the rest never read.
        """
        execution = self._start(op, parts, *extra)
        chunks, size, seen, complete = [], 0, 0, False
        try:
            for piece in execution.stdout():
                size += len(piece)
                if size > MAX_OUTPUT:
                    raise HomeFileError("The pod's answer is too large.")
                chunks.append(piece)
                seen += piece.count(b"\0")
                if records and seen >= records:
                    complete = True
                    break
        finally:
            execution.close()
        out = b"".join(chunks)
        error = refusal(out)
        if error is not None:
            raise error
        if not out.startswith(b"OK") or (execution.exit_code() != 0 and not complete):
            raise HomeFileError(f"The pod could not carry out the file operation: {execution.detail()}")
        return out[3:]  # after "OK " or "OK\n"

    async def stat(self, parts: tuple[str, ...]) -> HomeEntry:
        out = await asyncio.to_thread(self._run, "stat", parts)
        line = out.decode("utf-8", "surrogateescape").split("\n", 1)[0]
        return parse_stat(line, parts[-1] if parts else "")

    async def list(self, parts: tuple[str, ...]) -> list[HomeEntry]:
        out = await asyncio.to_thread(functools.partial(self._run, "list", parts, records=MAX_LIST_ENTRIES))
        directory, _, rest = out.partition(b"\n")
        return parse_listing(rest, directory.decode("utf-8", "surrogateescape"))

    async def delete(self, parts: tuple[str, ...]) -> None:
        await asyncio.to_thread(self._run, "delete", parts)

    def _open_read(self, parts: tuple[str, ...]) -> tuple[PodExec, Any, Any, Any]:
        execution = self._start("read", parts)
        try:
            self._first_line(execution)
            tar = tarfile.open(fileobj=io.BufferedReader(StreamReader(execution.stdout()), CHUNK), mode="r|")  # noqa: SIM115 closed with the HomeFile
            member = tar.next()
            if member is None or not member.isreg():
                tar.close()
                raise HomePathConflict("Not a regular file.")
            return execution, tar, member, tar.extractfile(member)
        except tarfile.TarError:
            execution.close()
            raise HomeFileError(f"The file could not be read: {execution.detail() or 'no data'}") from None
        except BaseException:
            execution.close()
            raise

    async def read(self, parts: tuple[str, ...]) -> HomeFile:
        execution, tar, member, handle = await asyncio.to_thread(self._open_read, parts)

        async def chunks() -> AsyncIterator[bytes]:
            while data := await asyncio.to_thread(handle.read, CHUNK):
                yield data

        def close() -> None:
            execution.close()
            tar.close()

        return HomeFile(member.size, float(member.mtime), chunks(), close=close)

    def _open_write(self, parts: tuple[str, ...], size: int, token: str) -> tuple[PodExec, str]:
        execution = self._start("write", parts, str(size), token, stdin=True)
        line = self._first_line(execution)
        return execution, line[3:].decode("utf-8", "surrogateescape")

    def _finish_write(self, execution: PodExec) -> str:
        out = b"".join(execution.stdout())
        execution.close()
        line = out.split(b"\n", 1)[0]
        error = refusal(line)
        if error is not None:
            raise error
        if execution.exit_code() != 0 or not line.startswith(b"DONE "):
            raise HomeFileError(f"The pod could not store the upload: {execution.detail()}")
        return line[5:].decode("utf-8", "surrogateescape")

    @staticmethod
    def _refusal_after(execution: PodExec) -> HomeFileError | None:
        """The refusal the script printed before its exec ended (None if it printed none)."""
        out = b""
        while len(out) < MAX_STDERR and (piece := execution.next_stdout()) is not None:
            out += piece
        for line in out.split(b"\n"):
            error = refusal(line)
            if error is not None:
                return error
        return None

    async def write(self, parts: tuple[str, ...], size: int, body: AsyncIterator[bytes]) -> HomeEntry:
        token = secrets.token_hex(8)
        execution, temp = await asyncio.to_thread(self._open_write, parts, size, token)
        written = 0
        try:
            async for chunk in body:
                written += len(chunk)
                if written > size:
                    break
                if chunk:
                    try:
                        await asyncio.to_thread(execution.send_stdin, chunk)
                    except HomeFileError as exc:  # the script may have ended first, and said why
                        raise await asyncio.to_thread(self._refusal_after, execution) or exc from None
            if written != size:
                raise HomeUploadIncomplete(f"The upload ended after {written} of {size} bytes.")
            name = await asyncio.to_thread(self._finish_write, execution)
        except BaseException:
            execution.close()  # ends the command's stdin: the script removes its temporary file
            directory, _, temp_name = temp.rpartition("/")
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._run, "abort", parts, directory, temp_name)
            raise
        return HomeEntry(name=name, type="file", size=size, mtime=time.time())

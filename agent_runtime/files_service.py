"""The agent's file service: HTTP/1.1 served over a ``files`` tunnel (docs/architecture.md §23).

A ``tunnel_open`` with ``service: "files"`` does not dial the session: the agent answers
the control plane itself, on the tunnel, with this small HTTP/1.1 server (``h11``, sans-I/O)
in front of the backend's home-file methods (:mod:`agent_runtime.backends.homefiles`). The
tunnel belongs to one session (the frame's ``session_id``); keep-alive serves many requests.

| request | answer |
|---|---|
| ``GET /<path>`` | a directory: 200 ``application/json`` ``{"path", "type": "directory", "entries": [{name, type, size, mtime}], "truncated"}``; a file: 200 ``application/octet-stream`` with ``Content-Length``, ``X-Home-Mtime`` and the bytes |
| ``PUT /<path>`` with ``Content-Length`` | the body written as the file (201 new, 200 replaced): ``{"path", "name", "type", "size", "mtime"}`` |
| ``DELETE /<path>`` | 204 |
| anything refused | ``{"code", "detail"}`` with the status of :class:`~agent_runtime.backends.homefiles.HomeFileError` |

``<path>`` is percent-encoded UTF-8 (``urllib.parse.quote`` of the home path); it is
checked again here with :func:`~agent_runtime.backends.homefiles.parse_home_path`. Bodies
stream both ways in ``CHUNK`` pieces with back-pressure (``drain``), so a file is never
held whole in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import h11
import msgspec

from agent_runtime.backends.homefiles import (
    MAX_LIST_ENTRIES,
    HomeFileError,
    HomePathInvalid,
    join,
    parse_home_path,
)

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
SERVER = b"streamspace-agent-files"


class _ClientGone(Exception):
    pass


class _Server:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, backend: Any, session_id: str):
        self.reader = reader
        self.writer = writer
        self.backend = backend
        self.session_id = session_id
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)

    async def _next_event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.reader.read(READ_SIZE)
            if not data and self.reader.at_eof():
                self.conn.receive_data(b"")
            else:
                self.conn.receive_data(data)

    async def _send(self, event: Any) -> None:
        data = self.conn.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def _respond(self, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), (b"server", SERVER)]
        await self._send(h11.Response(status_code=status, headers=headers))
        if body:
            await self._send(h11.Data(data=body))
        await self._send(h11.EndOfMessage())

    async def _error(self, status: int, code: str, detail: str) -> None:
        await self._respond(status, json.dumps({"code": code, "detail": detail}).encode())

    async def _body(self) -> AsyncIterator[bytes]:
        """The request body, piece by piece, as it arrives."""
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise _ClientGone()

    async def _drain_body(self) -> None:
        """Read what is left of a request body we did not use, so keep-alive can go on."""
        if self.conn.their_state is h11.SEND_BODY:
            async for _ in self._body():
                pass

    async def serve(self) -> None:
        while True:
            try:
                event = await self._next_event()
            except h11.RemoteProtocolError as exc:
                if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._error(exc.error_status_hint, "bad_request", str(exc))
                return
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):
                return
            try:
                await self._handle(event)
                await self._drain_body()
            except (_ClientGone, ConnectionError, h11.RemoteProtocolError):
                return
            if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
                return
            try:
                self.conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _handle(self, request: h11.Request) -> None:
        method = request.method
        try:
            raw = bytes(request.target).split(b"?", 1)[0]
            if not raw.startswith(b"/"):
                raise HomePathInvalid("The request target must start with '/'.")
            path = unquote(raw[1:].decode("ascii"), errors="strict")
            parts = parse_home_path(path)
        except (UnicodeDecodeError, UnicodeEncodeError):
            return await self._error(400, "invalid_path", "The path is not valid percent-encoded UTF-8.")
        except HomeFileError as exc:
            return await self._error(exc.status, exc.code, exc.message)
        try:
            if method == b"GET":
                await self._get(parts)
            elif method == b"PUT":
                await self._put(parts, request)
            elif method == b"DELETE":
                await self.backend.home_delete(self.session_id, parts)
                await self._respond(204, b"")
            else:
                await self._error(405, "method_not_allowed", "GET, PUT or DELETE.")
        except HomeFileError as exc:
            if self.conn.our_state is h11.SEND_RESPONSE:
                await self._error(exc.status, exc.code, exc.message)
            else:
                raise _ClientGone() from exc
        except (_ClientGone, ConnectionError):
            raise
        except Exception:
            log.exception("files: %s %r failed", method.decode(), join(parts))
            if self.conn.our_state is h11.SEND_RESPONSE:
                await self._error(500, "agent_error", "The agent failed to carry out the file operation.")
            else:
                raise _ClientGone() from None

    async def _get(self, parts: tuple[str, ...]) -> None:
        entry = await self.backend.home_stat(self.session_id, parts)
        if entry.type == "directory":
            entries = await self.backend.home_list(self.session_id, parts)
            body = {
                "path": join(parts),
                "type": "directory",
                "entries": msgspec.to_builtins(entries),
                "truncated": len(entries) >= MAX_LIST_ENTRIES,
            }
            return await self._respond(200, json.dumps(body).encode())
        opened = await self.backend.home_read(self.session_id, parts)
        try:
            headers = [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", b"%d" % opened.size),
                (b"x-home-mtime", repr(float(opened.mtime)).encode()),
                (b"server", SERVER),
            ]
            await self._send(h11.Response(status_code=200, headers=headers))
            sent = 0
            async for chunk in opened.chunks():
                chunk = chunk[: opened.size - sent]  # a file that grew meanwhile: as announced
                if chunk:
                    sent += len(chunk)
                    await self._send(h11.Data(data=chunk))
                if sent >= opened.size:
                    break
            if sent < opened.size:  # it shrank meanwhile: the response cannot end well
                raise _ClientGone()
            await self._send(h11.EndOfMessage())
        finally:
            await opened.aclose()

    async def _put(self, parts: tuple[str, ...], request: h11.Request) -> None:
        length = next((v for k, v in request.headers if k == b"content-length"), None)
        if length is None:
            return await self._error(411, "length_required", "An upload needs a Content-Length.")
        size = int(length)  # h11 refused a malformed one
        existed = True
        try:
            await self.backend.home_stat(self.session_id, parts)
        except HomeFileError as exc:
            if exc.status != 404:
                raise
            existed = False
        entry = await self.backend.home_write(self.session_id, parts, size, self._body())
        body = {"path": join(parts), **msgspec.to_builtins(entry)}
        await self._respond(200 if existed else 201, json.dumps(body).encode())


async def serve_files(sock: socket.socket, backend: Any, session_id: str) -> None:
    """Serve HTTP requests for ``session_id``'s home on ``sock`` until the peer closes it."""
    reader, writer = await asyncio.open_connection(sock=sock, limit=READ_SIZE)
    try:
        await _Server(reader, writer, backend, session_id).serve()
    except Exception:
        log.exception("files: the service for session %s failed", session_id)
    finally:
        writer.close()

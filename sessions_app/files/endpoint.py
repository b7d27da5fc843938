"""``/api/v1/sessions/<id>/files/<path>``: a session's home through its agent (§23).

| method | does |
|---|---|
| ``GET`` | a directory: ``{"path", "type": "directory", "entries": [{name, type, size, mtime}], "truncated"}``; a file: its bytes, streamed, as a download (``Content-Disposition: attachment``) |
| ``PUT`` | the request body becomes the file (``Content-Length`` required, at most ``STREAMSPACE_UPLOAD_MAX_BYTES``, else 411 / 413): 201 created or 200 replaced, ``{"path", "name", "type", "size", "mtime"}`` |
| ``DELETE`` | removes the file, or the directory with its contents: 204 |

Errors are ``{"code", "detail"}``: 400 ``invalid_path`` (not percent-encoded UTF-8, ``..``,
absolute, control bytes), 401, 403 (``permission_denied``; ``path_outside_home`` for a link
leading out), 404, 409 (``session_not_running`` with the state and a hint; ``conflict``:
a directory where a file is meant or the other way round), 411, 413, 501
(``files_unsupported``: the agent's backend has no file access), 502/503/504 (the agent).

Raw ASGI, so both directions stream: a download is read from the agent only as fast as the
client takes it (``OutboundFlow``), an upload is read from the client only as fast as the
agent writes it (``InboundFlow``, and the front serves these requests, §10.3, so the body is
not spooled first).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from channels.db import database_sync_to_async
from django.conf import settings

from agent_runtime.backends.homefiles import HomeFileError, join, parse_home_path
from sessions_app.files import agent
from sessions_app.files.auth import Decision, decide
from sessions_app.files.paths import PATH_RE
from sessions_app.proxy.client import ConnectFailed, UpstreamClosed, UpstreamError, UpstreamTimeout
from streamspace.audit.services import record
from streamspace.transport.flow import InboundFlow, OutboundFlow, abort_connection

log = logging.getLogger(__name__)

PREFIX = "/api/v1/sessions/"
METHODS = ("GET", "PUT", "DELETE")


class _ClientGone(Exception):
    pass


def matches(path: str) -> bool:
    """Whether an HTTP request path is this endpoint's (the router asks)."""
    return path.startswith(PREFIX) and re.match(r"^/api/v1/sessions/[^/]+/files(/|$)", path) is not None


async def _answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    head += [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})


async def _error(send: Any, status: int, code: str, detail: str, **extra: Any) -> None:
    headers = [(b"allow", b"GET, PUT, DELETE")] if status == 405 else None
    await _answer(send, status, json.dumps({"code": code, "detail": detail, **extra}).encode(), headers)


def _header(scope: dict, name: bytes) -> bytes | None:
    return next((v for k, v in scope.get("headers") or [] if k.lower() == name), None)


def content_disposition(name: str) -> bytes:
    """``attachment`` with an ASCII fallback name and the exact one in RFC 5987 form."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in name) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}".encode("ascii")


async def files_app(scope: dict, receive: Any, send: Any) -> None:
    """The ASGI application (HTTP only)."""
    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    found = PATH_RE.match(raw.split(b"?", 1)[0])
    try:
        session_id = uuid.UUID(found.group(1).decode("ascii")) if found else None
    except (ValueError, UnicodeDecodeError):
        session_id = None
    if session_id is None:
        return await _error(send, 404, "not_found", "No such session.")
    try:
        parts = parse_home_path(unquote_to_bytes(found.group(2) or b"").decode("utf-8"))
    except UnicodeDecodeError:
        return await _error(send, 400, "invalid_path", "The path is not valid percent-encoded UTF-8.")
    except HomeFileError as exc:
        return await _error(send, exc.status, exc.code, exc.message)
    method = scope["method"]
    if method not in METHODS:
        return await _error(send, 405, "method_not_allowed", f"Method {method} is not allowed here.")
    decision = await database_sync_to_async(decide)(scope, session_id, method)
    if decision.status:
        return await _error(send, decision.status, decision.code, decision.detail, **decision.extra)
    try:
        if method == "GET":
            await _get(scope, receive, send, decision, parts)
        elif method == "PUT":
            await _put(scope, receive, send, decision, parts)
        else:
            await _delete(send, decision, parts)
    except ConnectFailed as exc:
        await _error(send, 503, "agent_unavailable", f"The session's agent cannot be reached: {exc}")
    except UpstreamTimeout:
        await _error(send, 504, "agent_timeout", "The session's agent did not answer in time.")
    except UpstreamClosed:
        await _error(
            send, 502, "agent_error", "The session's agent closed the connection (it may predate file transfers)."
        )
    except _ClientGone:
        return


def _agent_error(body: bytes, status: int) -> tuple[str, str]:
    try:
        data = json.loads(body)
        return str(data["code"]), str(data["detail"])
    except (ValueError, KeyError, TypeError):
        return "agent_error", f"The session's agent answered {status}."


async def _relay_error(send: Any, response: Any) -> None:
    body = await response.read_all()
    code, detail = _agent_error(body, response.status)
    status = response.status if 400 <= response.status < 600 else 502
    await _error(send, status, code, detail)


async def _get(scope: dict, receive: Any, send: Any, decision: Decision, parts: tuple[str, ...]) -> None:
    session = decision.session
    response = await agent.request(session.agent_id, str(session.pk), b"GET", parts)
    try:
        if response.status != 200:
            return await _relay_error(send, response)
        content_type = dict(response.headers).get(b"content-type", b"")
        if content_type.startswith(b"application/json"):
            listing = json.loads(await response.read_all())
            return await _answer(send, 200, json.dumps(listing).encode())
        await _stream_file(send, response, parts)
    finally:
        response.release()


async def _stream_file(send: Any, response: Any, parts: tuple[str, ...]) -> None:
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-disposition", content_disposition(parts[-1] if parts else "home")),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        (b"content-security-policy", b"sandbox"),
    ]
    if response.content_length is not None:
        headers.append((b"content-length", b"%d" % response.content_length))
    mtime = dict(response.headers).get(b"x-home-mtime")
    if mtime:
        headers.append((b"x-home-mtime", mtime))
    flow = OutboundFlow.attach(send, websocket=False)
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        while True:
            try:
                data = await response.read()
            except UpstreamError:
                abort_connection(send)  # a download cut short must not look complete
                raise _ClientGone() from None
            if not data:
                break
            await flow.wait()
            if flow.stopped:
                raise _ClientGone()
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        flow.detach()


def _upload_length(scope: dict) -> int | None:
    value = _header(scope, b"content-length")
    if value is None or not value.isdigit() or _header(scope, b"transfer-encoding") is not None:
        return None
    return int(value)


async def _body(receive: Any, send: Any, length: int) -> AsyncIterator[bytes]:
    """The client's body as it arrives, at most ``length`` bytes; its socket paused while the
    agent falls behind."""
    inbound = InboundFlow(send, receive)
    received = 0
    try:
        while received < length:
            message = await receive()
            inbound.after_receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            chunk = message.get("body", b"")
            if chunk:
                chunk = chunk[: length - received]
                received += len(chunk)
                yield chunk
            if not message.get("more_body", False):
                return
    finally:
        inbound.release()


async def _put(scope: dict, receive: Any, send: Any, decision: Decision, parts: tuple[str, ...]) -> None:
    if not parts:
        return await _error(send, 409, "conflict", "The home itself is a directory: name a file to upload.")
    length = _upload_length(scope)
    if length is None:
        return await _error(send, 411, "length_required", "An upload needs a Content-Length header (no chunked body).")
    limit = settings.STREAMSPACE_UPLOAD_MAX_BYTES
    if length > limit:
        return await _error(
            send, 413, "too_large", f"The file is {length} bytes; uploads are limited to {limit} bytes.", limit=limit
        )
    session = decision.session
    response = await agent.request(
        session.agent_id, str(session.pk), b"PUT", parts, body=_body(receive, send, length), length=length
    )
    try:
        if response.status not in (200, 201):
            return await _relay_error(send, response)
        body = await response.read_all()
    finally:
        response.close()  # an upload's tunnel is its own (see .agent)
    await database_sync_to_async(record)(
        "session.file_uploaded",
        actor=decision.user,
        target=session,
        request=decision.request,
        details={"path": join(parts), "size": length},
    )
    await _answer(send, response.status, body)


async def _delete(send: Any, decision: Decision, parts: tuple[str, ...]) -> None:
    if not parts:
        return await _error(send, 400, "invalid_path", "The home itself cannot be deleted.")
    session = decision.session
    response = await agent.request(session.agent_id, str(session.pk), b"DELETE", parts)
    try:
        if response.status != 204:
            return await _relay_error(send, response)
        await response.read_all()
    finally:
        response.release()
    await database_sync_to_async(record)(
        "session.file_deleted", actor=decision.user, target=session, request=decision.request,
        details={"path": join(parts)},
    )  # fmt: skip
    await send({"type": "http.response.start", "status": 204, "headers": [(b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": b""})

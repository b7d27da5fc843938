"""Requests to a session's agent file service (``agent_runtime/files_service.py``), over a
tunnel the agent answers itself (``tunnel_open`` with ``service: "files"``, §10.4, §23).

Reads share keep-alive tunnels per session in the proxy's connection pool (a stale one is
replayed on a new tunnel, as the proxy does). An upload gets a tunnel of its own that is
closed after: a streamed body cannot be replayed if a kept tunnel turns out dead.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import AsyncIterable
from typing import Any
from urllib.parse import quote

from django.conf import settings

from agent_runtime.backends.homefiles import join
from agent_runtime.protocol import SERVICE_FILES
from agents_app.tunnels import TunnelUnavailable, open_tunnel
from sessions_app.proxy.client import ConnectFailed, Response
from sessions_app.proxy.upstream import pool

HOST = b"agent-files"


async def _connect(agent_pk: int, session_id: str, factory: Any) -> tuple[Any, Any]:
    try:
        sock = await open_tunnel(agent_pk, session_id, 0, service=SERVICE_FILES)
    except TunnelUnavailable as exc:
        raise ConnectFailed(str(exc)) from exc
    return await asyncio.get_running_loop().create_connection(factory, sock=sock)


def target(parts: tuple[str, ...]) -> bytes:
    """The request target for a home path: ``/`` and the path, percent-encoded UTF-8."""
    return b"/" + quote(join(parts), safe="/").encode("ascii")


async def request(
    agent_pk: int,
    session_id: str,
    method: bytes,
    parts: tuple[str, ...],
    *,
    body: AsyncIterable[bytes] | None = None,
    length: int | None = None,
) -> Response:
    """Send one request to the agent's file service; the response once its head arrived.

    Raises the proxy client's errors: ``ConnectFailed`` (no tunnel), ``UpstreamTimeout``,
    ``UpstreamClosed`` (the agent closed the tunnel: too old to know the service, or gone).
    """
    headers = [(b"host", HOST)]
    key: tuple = ("files", session_id)
    if body is not None:
        headers.append((b"content-length", b"%d" % (length or 0)))
        key = ("files-upload", session_id, secrets.token_hex(8))
    return await pool().request(
        key,
        functools.partial(_connect, agent_pk, session_id),
        method,
        target(parts),
        headers,
        body,
        read_timeout=settings.STREAMSPACE_PROXY_READ_TIMEOUT_S,
    )

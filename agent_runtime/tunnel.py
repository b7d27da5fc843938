"""The agent's side of a session tunnel (ARCHITECTURE §6; no Django import).

On a ``tunnel_open`` frame the agent dials the session's port (the endpoint its backend
reports, else ``127.0.0.1:<port>``) and opens a WebSocket to the ``url`` in the frame —
the control-plane replica serving the browser — authenticated with the agent token. Raw
TCP bytes then travel as binary frames both ways until either side closes. Each tunnel
carries one TCP connection; HTTP keep-alive on the control plane reuses it for many
requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from typing import Any
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agent_runtime.pipes import until_first_done
from agent_runtime.protocol import TunnelOpen

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
CONNECT_TIMEOUT_S = 10.0
# Close codes the control plane sees when the agent cannot reach the session.
SESSION_UNREACHABLE = 4502


def _endpoint(status: Any, port: int) -> tuple[str, int]:
    endpoint = getattr(status, "endpoint", None)
    if endpoint is None and isinstance(status, dict):
        endpoint = status.get("endpoint")
    if endpoint:
        try:
            parts = urlsplit("//" + endpoint)
            if parts.hostname and parts.port:
                return parts.hostname, parts.port
        except ValueError:
            pass
    return "127.0.0.1", port


async def _session_address(backend: Any, session_id: str, port: int) -> tuple[str, int]:
    if backend is None:
        return "127.0.0.1", port
    try:
        status = backend.status(session_id)
        if inspect.isawaitable(status):
            status = await status
    except Exception:
        log.exception("tunnel: status of session %s failed", session_id)
        return "127.0.0.1", port
    return _endpoint(status, port)


async def run_tunnel(payload: Any, *, token: str, backend: Any) -> None:
    """Serve one ``tunnel_open`` request until the tunnel closes (never raises)."""
    try:
        request = payload if isinstance(payload, TunnelOpen) else msgspec.convert(payload, TunnelOpen)
    except msgspec.ValidationError as exc:
        log.warning("tunnel: invalid tunnel_open payload: %s", exc)
        return
    if not request.url.startswith(("ws://", "wss://")):
        log.warning("tunnel %s: refusing url %r", request.stream_id, request.url)
        return
    host, port = await _session_address(backend, request.session_id, request.port)
    try:
        ws = await connect(
            request.url,
            additional_headers={"Authorization": f"Bearer {token}"},
            compression=None,
            max_size=4 * 1024 * 1024,
            open_timeout=CONNECT_TIMEOUT_S,
            user_agent_header="streamspace-agent-tunnel",
            proxy=None,
        )
    except Exception as exc:
        log.warning("tunnel %s: cannot reach the control plane at %s: %r", request.stream_id, request.url, exc)
        return
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=CHUNK), CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        log.warning(
            "tunnel %s: session %s at %s:%s unreachable: %r", request.stream_id, request.session_id, host, port, exc
        )
        await ws.close(SESSION_UNREACHABLE, "session unreachable")
        return
    log.debug("tunnel %s open to %s:%s", request.stream_id, host, port)
    await _pipe(ws, reader, writer)


async def _pipe(ws: ClientConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async def tcp_to_ws() -> None:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                return
            await ws.send(data)  # waits while the control plane is slow (bounded write buffer)

    async def ws_to_tcp() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                if isinstance(message, str):
                    message = message.encode()
                writer.write(message)
                await writer.drain()

    try:
        await until_first_done(tcp_to_ws(), ws_to_tcp())
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await ws.close()

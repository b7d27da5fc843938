"""The agent's side of a session tunnel (docs/architecture.md §10.4; no Django import).

On a ``tunnel_open`` frame the agent dials the session's port (the endpoint its backend
reports, else ``127.0.0.1:<port>``) and opens a WebSocket to the ``url`` in the frame —
the control-plane replica serving the browser — authenticated with the agent token. Raw
TCP bytes then travel as binary frames both ways until either side closes. Each tunnel
carries one TCP connection; HTTP keep-alive on the control plane reuses it for many
requests.

The tunnel is plain asyncio on ``websockets``' sans-I/O protocol: the control plane's
socket and the session's are two :class:`~agent_runtime.pipes.PipeEnd` s, frames are built
(masked, as a client must) and parsed by ``websockets.client.ClientProtocol``, and bytes move
with back-pressure both ways, with no task or queue per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import msgspec
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from agent_runtime.files_service import serve_files
from agent_runtime.pipes import FramedEnd, PipeEnd, RawEnd
from agent_runtime.protocol import SERVICE_FILES, TunnelOpen

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
MAX_FRAME = 4 * 1024 * 1024
_PAYLOAD = (Opcode.BINARY, Opcode.CONT, Opcode.TEXT)
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


class _ControlPlaneEnd(FramedEnd):
    """The WebSocket to the control plane: the handshake, then frames in and out."""

    def __init__(self, owner: _Tunnel, ws: ClientProtocol) -> None:
        super().__init__(owner, ws)
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Response):
                if not self.opened.done():
                    if ws.handshake_exc is not None:
                        self.opened.set_exception(ws.handshake_exc)
                    else:
                        self.opened.set_result(None)
            elif event.opcode in _PAYLOAD and event.data:
                self.deliver(event.data)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("the control plane closed the connection"))
        super().connection_lost(exc)


class _Tunnel:
    """Closes the other end when one ends; ``done`` once both are closed."""

    def __init__(self) -> None:
        self.control_plane: _ControlPlaneEnd | None = None
        self.session: RawEnd | None = None  # the session's TCP port
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def end_closed(self, end: PipeEnd) -> None:
        end.end_peer()
        control_plane, session = self.control_plane, self.session
        if all(e is None or e.closed for e in (control_plane, session)) and not self.done.done():
            self.done.set_result(None)


async def _open_control_plane(tunnel: _Tunnel, url: str, token: str) -> _ControlPlaneEnd:
    uri = parse_uri(url)
    ws = ClientProtocol(uri, max_size=MAX_FRAME)
    request = ws.connect()
    request.headers["Authorization"] = f"Bearer {token}"
    request.headers["User-Agent"] = "streamspace-agent-tunnel"
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context() if uri.secure else None
    _, end = await loop.create_connection(
        lambda: _ControlPlaneEnd(tunnel, ws),
        uri.host,
        uri.port,
        ssl=context,
        server_hostname=uri.host if context else None,
    )
    tunnel.control_plane = end
    ws.send_request(request)
    end.flush()
    try:
        await end.opened
    except BaseException:
        end.transport.abort()
        raise
    return end


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
    if request.service:
        return await _run_service(request, token=token, backend=backend)
    host, port = await _session_address(backend, request.session_id, request.port)
    tunnel = _Tunnel()
    try:
        control_plane = await asyncio.wait_for(_open_control_plane(tunnel, request.url, token), CONNECT_TIMEOUT_S)
    except Exception as exc:
        log.warning("tunnel %s: cannot reach the control plane at %s: %r", request.stream_id, request.url, exc)
        return
    loop = asyncio.get_running_loop()
    try:
        _, session = await asyncio.wait_for(
            loop.create_connection(lambda: RawEnd(tunnel, control_plane), host, port), CONNECT_TIMEOUT_S
        )
    except (OSError, TimeoutError) as exc:
        log.warning(
            "tunnel %s: session %s at %s:%s unreachable: %r", request.stream_id, request.session_id, host, port, exc
        )
        control_plane.close(SESSION_UNREACHABLE, "session unreachable")
        return
    tunnel.session = session
    control_plane.link(session)  # closes the session's socket if the control plane already left
    log.debug("tunnel %s open to %s:%s", request.stream_id, host, port)
    try:
        await tunnel.done
    finally:
        for end in (control_plane, session):
            if not end.closed:
                end.transport.abort()


async def _run_service(request: TunnelOpen, *, token: str, backend: Any) -> None:
    """A tunnel the agent answers itself (``service``), here the file service (§23)."""
    if request.service != SERVICE_FILES or backend is None:
        log.warning("tunnel %s: unknown service %r", request.stream_id, request.service)
        return
    tunnel = _Tunnel()
    try:
        control_plane = await asyncio.wait_for(_open_control_plane(tunnel, request.url, token), CONNECT_TIMEOUT_S)
    except Exception as exc:
        log.warning("tunnel %s: cannot reach the control plane at %s: %r", request.stream_id, request.url, exc)
        return
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    _, session = await loop.create_connection(lambda: RawEnd(tunnel, control_plane), sock=ours)
    tunnel.session = session
    control_plane.link(session)
    server = asyncio.ensure_future(serve_files(theirs, backend, request.session_id))
    try:
        await tunnel.done
    finally:
        for end in (control_plane, session):
            if not end.closed:
                end.transport.abort()
        server.cancel()
        with contextlib.suppress(BaseException):
            await server

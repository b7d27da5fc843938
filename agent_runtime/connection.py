"""The agent's link to the control plane (docs/architecture.md §6).

One :class:`AgentConnection` keeps a WebSocket to ``<control plane>/api/v1/agents/connect``
open forever: it registers first (with the backend's inventory when leader), heartbeats at
the interval the ``registered`` frame names, hands ``command`` frames to the
:class:`~agent_runtime.commands.CommandExecutor` and ``tunnel_open`` frames to
``agent_runtime.tunnel.run_tunnel``, and reconnects with jittered exponential backoff.

Leadership changes are announced with a ``leader`` frame. On takeover the new leader sends
``leader`` (is_leader=true) followed by one ``session_status`` per session in its
inventory, so the hub learns both the new route for commands and the current state of
every session without a second ``register`` on the same socket (a leader that was not
connected at takeover simply registers with is_leader=true and its inventory).

``result`` and ``session_status`` frames that could not be sent because the socket was
down are kept (bounded) and sent after the next ``registered``.

The backend's watch of its workloads (:meth:`Backend.watch`) runs for the agent's lifetime,
connected or not; what it and the launches report goes to the executor
(:meth:`Backend.listen`), which turns it into ``session_status`` frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from agent_runtime import __version__
from agent_runtime.backends.base import Backend, BackendError
from agent_runtime.commands import CommandExecutor, command_id_of
from agent_runtime.config import AgentConfig
from agent_runtime.leader import Elector
from agent_runtime.protocol import (
    CONTROL_PLANE_MESSAGES,
    MAX_FRAME_BYTES,
    Capacity,
    Command,
    Error,
    Heartbeat,
    Leader,
    Payload,
    ProtocolError,
    Register,
    Registered,
    Result,
    SessionStatus,
    TunnelOpen,
    decode,
    encode,
)

log = logging.getLogger(__name__)

REGISTER_TIMEOUT_S = 10.0
OUTBOX_LIMIT = 1000


def backoff_delays(initial: float, cap: float, rng: random.Random | None = None) -> Iterator[float]:
    """Full-jitter exponential backoff: attempt n (from 0) waits a uniform draw from
    [0, min(cap, initial·2ⁿ)].

    The first wait is drawn too: when a control-plane replica dies, every agent on it loses
    its socket in the same instant, and their first retries spread evenly over ``initial``
    seconds rather than arriving at the surviving replicas together (docs/architecture.md
    §13.2). Later waits spread over ever wider windows up to ``cap``.
    """
    rng = rng or random.Random()
    attempt = 0
    while True:
        yield rng.uniform(0, min(cap, initial * (2**attempt)))
        attempt += 1


class AgentConnection:
    def __init__(self, config: AgentConfig, backend: Backend, elector: Elector):
        self.config = config
        self.backend = backend
        self.elector = elector
        self.executor = CommandExecutor(
            backend, self.send, is_leader=self._is_leader, on_refused=self._announce_not_leader
        )
        backend.listen(self.executor)  # launch steps and workload exits go to the executor
        self.heartbeat_interval = 10.0
        self.connected = asyncio.Event()
        self.registrations = 0
        self._ws: ClientConnection | None = None
        self._send_lock = asyncio.Lock()
        self._outbox: deque[Payload] = deque(maxlen=OUTBOX_LIMIT)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self._announced_leader: bool | None = None
        self._last_refusal_notice = -1e9
        elector.subscribe(self._leadership_changed)

    # --- leadership -------------------------------------------------------------------------
    def _is_leader(self) -> bool:
        check = getattr(self.elector, "check", None)
        return check() if check else self.elector.is_leader

    def _leadership_changed(self, is_leader: bool) -> None:
        self._spawn(self._announce_leadership(is_leader))

    def _announce_not_leader(self) -> None:
        """A command reached us while we are not leader: tell the hub again (at most 1/s)."""
        now = time.monotonic()
        if now - self._last_refusal_notice >= 1.0:
            self._last_refusal_notice = now
            self._announced_leader = False
            self._spawn(self.send(Leader(is_leader=False)))

    async def _announce_leadership(self, is_leader: bool) -> None:
        if self._ws is None or self._announced_leader == is_leader:
            return  # the next register carries it / already said
        self._announced_leader = is_leader
        await self.send(Leader(is_leader=is_leader))
        if is_leader:
            try:
                inventory = await self.backend.inventory()
            except BackendError as exc:
                log.error("inventory failed after takeover", extra={"error": str(exc)})
                return
            for item in inventory:
                await self.executor.report(item)

    # --- sending ----------------------------------------------------------------------------
    async def send(self, payload: Payload) -> None:
        """Send a frame now; keep results and statuses for the next connection if the socket is down."""
        ws = self._ws
        if ws is not None:
            try:
                async with self._send_lock:
                    await ws.send(encode(payload))
                return
            except ConnectionClosed:
                pass
        if isinstance(payload, Result | SessionStatus):
            self._outbox.append(payload)

    async def _flush_outbox(self) -> None:
        while self._outbox and self._ws is not None:
            await self.send(self._outbox.popleft())

    # --- lifecycle --------------------------------------------------------------------------
    def _spawn(self, coro) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self) -> None:
        """Connect, serve, reconnect — until :meth:`shutdown`."""
        delays = backoff_delays(self.config.backoff_initial, self.config.backoff_max)
        urls = self.config.connect_urls
        attempt = 0
        self._spawn(self._watch_backend())
        while not self._stopping.is_set():
            url = urls[attempt % len(urls)]
            attempt += 1
            try:
                async with connect(
                    url,
                    additional_headers={"Authorization": f"Bearer {self.config.token}"},
                    max_size=MAX_FRAME_BYTES,
                    open_timeout=10,
                    ping_interval=20,
                    ping_timeout=20,
                    close_timeout=5,
                    user_agent_header=f"streamspace-agent/{__version__}",
                ) as ws:
                    if await self._serve(ws):
                        delays = backoff_delays(self.config.backoff_initial, self.config.backoff_max)
            except InvalidStatus as exc:
                status = exc.response.status_code
                level = logging.ERROR if status in (401, 403) else logging.WARNING
                log.log(level, "control plane refused the connection", extra={"status": status, "url": url})
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
                log.warning("connection failed", extra={"error": repr(exc), "url": url})
            except BackendError as exc:
                # Without an inventory the leader must not register: an empty one would tell the
                # control plane that every session is lost.
                log.error("backend unavailable; not registering", extra={"error": str(exc)})
            except Exception:
                log.exception("connection crashed; reconnecting")
            finally:
                self._ws = None
                self.connected.clear()
            if self._stopping.is_set():
                break
            delay = next(delays)
            log.info("reconnecting", extra={"delay_s": round(delay, 3)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    async def _serve(self, ws: ClientConnection) -> bool:
        """One connection: register, then read frames. Returns True if it got registered."""
        is_leader = self._is_leader()
        inventory = await self.backend.inventory() if is_leader else []
        capacity = await self.capacity()
        register = Register(
            agent_id=self.config.agent_id,
            instance_id=self.config.instance_id,
            platform=self.backend.platform,
            version=__version__,
            hostname=socket.gethostname(),
            is_leader=is_leader,
            capacity=capacity,
            sessions=inventory,
        )
        await ws.send(encode(register))
        try:
            first = await asyncio.wait_for(ws.recv(), REGISTER_TIMEOUT_S)
            frame = decode(first, CONTROL_PLANE_MESSAGES)
        except (TimeoutError, ProtocolError) as exc:
            log.error("no valid 'registered' reply", extra={"error": str(exc)})
            return False
        if isinstance(frame.payload, Error):
            log.error("registration refused", extra={"code": frame.payload.code, "detail": frame.payload.message})
            return False
        if not isinstance(frame.payload, Registered):
            log.error("expected 'registered' first", extra={"got": frame.type})
            return False
        self.heartbeat_interval = max(0.1, frame.payload.heartbeat_interval_s)
        self.registrations += 1
        self._announced_leader = is_leader
        for item in inventory:
            self.executor.reported[item.session_id] = item
        self._ws = ws
        self.connected.set()
        log.info(
            "registered",
            extra={"is_leader": is_leader, "sessions": len(inventory), "heartbeat_s": self.heartbeat_interval},
        )
        await self._flush_outbox()
        if is_leader != self._is_leader():  # leadership changed while we were registering
            await self._announce_leadership(self._is_leader())
        heartbeat = self._spawn(self._heartbeat_loop(ws))
        try:
            async for raw in ws:
                await self._dispatch(raw)
        except ConnectionClosed:
            pass
        finally:
            heartbeat.cancel()
            self._ws = None
            self.connected.clear()
        log.warning("disconnected", extra={"code": ws.close_code, "reason": ws.close_reason})
        return True

    async def _dispatch(self, raw: str | bytes) -> None:
        try:
            frame = decode(raw, CONTROL_PLANE_MESSAGES)
        except ProtocolError as exc:
            cid = command_id_of(raw)
            log.warning("invalid frame", extra={"code": exc.code, "error": exc.message, "command_id": cid})
            if cid and '"command"' in (raw if isinstance(raw, str) else raw.decode("utf-8", "replace")):
                await self.executor.reject_malformed(cid, f"invalid command: {exc.message}")
            return
        payload = frame.payload
        if isinstance(payload, Command):
            await self.executor.submit(payload)
        elif isinstance(payload, TunnelOpen):
            self._open_tunnel(payload)
        elif isinstance(payload, Error):
            log.warning("control plane reported an error", extra={"code": payload.code, "detail": payload.message})
        elif isinstance(payload, Registered):
            self.heartbeat_interval = max(0.1, payload.heartbeat_interval_s)

    async def _watch_backend(self) -> None:
        """Run the backend's watch of its workloads (exits) for as long as the agent runs; a
        watch that fails is started again (the periodic check covers the gap)."""
        delays = backoff_delays(1.0, 30.0)
        while not self._stopping.is_set():
            try:
                await self.backend.watch()
                return  # this backend has nothing to watch
            except Exception:
                log.exception("the backend's watch of its workloads failed; restarting it")
            await asyncio.sleep(next(delays))

    def _open_tunnel(self, payload: TunnelOpen) -> None:
        try:
            # Looked up per tunnel: an agent packaged without the tunnel module still runs sessions.
            from agent_runtime.tunnel import run_tunnel  # noqa: PLC0415
        except ImportError:
            log.error(
                "tunnel_open received but this agent has no tunnel support", extra={"stream_id": payload.stream_id}
            )
            return
        self._spawn(self._tunnel(run_tunnel, payload))

    async def _tunnel(self, run_tunnel, payload: TunnelOpen) -> None:
        try:
            await run_tunnel(payload, token=self.config.token, backend=self.backend)
        except Exception:
            log.exception("tunnel failed", extra={"stream_id": payload.stream_id, "session_id": payload.session_id})

    async def capacity(self) -> Capacity:
        """The backend's capacity, with ``sessions`` set to ``--max-sessions`` when that is given."""
        capacity = await self.backend.capacity()
        if self.config.max_sessions > 0:
            capacity = msgspec.structs.replace(capacity, sessions=self.config.max_sessions)
        return capacity

    async def _heartbeat_loop(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                is_leader = self._is_leader()
                if is_leader:
                    await self.executor.reconcile()
                sessions = len(self.executor.reported) if is_leader else 0
                capacity = await self.capacity()
                await self.send(Heartbeat(is_leader=is_leader, active_sessions=sessions, capacity=capacity))
            except Exception:  # a heartbeat must never take the connection down
                log.exception("heartbeat failed")

    async def shutdown(self, drain_timeout: float) -> None:
        """SIGTERM: stop taking commands, finish running ones, give up the lease, close."""
        log.info("draining", extra={"in_flight": self.executor.in_flight})
        drained = await self.executor.drain(drain_timeout)
        if not drained:
            log.warning("drain timed out; commands left unfinished", extra={"in_flight": self.executor.in_flight})
        await self.elector.stop()
        await self._announce_leadership(False)
        self._stopping.set()
        ws = self._ws
        if ws is not None:
            await ws.close(1001, "agent shutting down")
        for task in list(self._tasks):
            task.cancel()

"""The agent hub: one WebSocket per agent instance at ``/api/v1/agents/connect``.

Protocol in ``agent_runtime/protocol.py`` (docs/architecture.md §6). The consumer parses frames,
keeps presence in Redis fresh and calls ``agents_app.hub.rows`` for everything that touches the
database. A bad frame gets an ``error`` frame and never affects another connection; a frame
over 1 MiB closes this socket with 1009.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import connection
from django.utils import timezone

from agent_runtime import protocol
from agents_app import dispatch
from agents_app import services as agent_services
from agents_app.hub import frames, presence, rows
from agents_app.hub.batch import batcher
from agents_app.metrics import HUB_CONNECTIONS
from agents_app.models import AgentCommand, CommandState
from streamspace import events, fanout
from streamspace.api.auth_header import bearer_token
from streamspace.transport import admission

log = logging.getLogger(__name__)

REGISTER_TIMEOUT_S = 10.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_BAD_REGISTER = 4400
CLOSE_FORBIDDEN = 4403
DISCONNECT_FRAMES_S = 5.0  # applying the frames queued at a disconnect
DISCONNECT_BUDGET_S = 9.0  # those frames, then their fan-out


def _emit(event: str, data: dict[str, Any]) -> None:
    events.emit(event, actor=None, data=data)


def _flush(batch: fanout.Batch) -> None:
    """A fan-out, on whichever thread runs it; that thread's connection goes back at once."""
    try:
        fanout.flush(batch)
    finally:
        connection.close()


class AgentConsumer(AsyncWebsocketConsumer):
    agent = None
    instance = None
    is_leader = False
    _last_db_heartbeat = 0.0
    # The capacity last written to the instance row: a heartbeat that changes it is written at
    # once (placement and the catalog read it), others at most every AGENT_HEARTBEAT_DB_WRITE_S.
    _db_capacity: dict | None = None
    _register_timer: asyncio.Task | None = None
    _poll_task: asyncio.Task | None = None
    _frame_queue: asyncio.Queue | None = None
    _frame_task: asyncio.Task | None = None
    _fan_out_queue: asyncio.Queue | None = None
    _fan_out_task: asyncio.Task | None = None
    # Set when the register frame arrives, before it is processed: under a reconnect herd the
    # database work may queue for longer than the timeout, which must not count against it.
    _register_received = False
    _counted = False  # counted in HUB_CONNECTIONS (registered), so the disconnect uncounts it

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its hop to the database thread before every message
        (``aclose_old_connections``): this consumer uses the ORM only through
        ``database_sync_to_async``, which closes stale connections around each call, and a
        frame, or a command on its way to the agent, must not wait there behind the hub's
        (and every other socket's) database work."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- connection lifecycle -------------------------------------------------------------
    async def connect(self) -> None:
        self.agent = await batcher(agent_services.agents_for_tokens).submit(
            bearer_token(dict(self.scope.get("headers", [])).get(b"authorization")) or ""
        )
        if self.agent is None:
            await self.close(code=CLOSE_UNAUTHORIZED)  # before accept: the handshake is refused (403)
            return
        await self.accept()
        self._register_timer = asyncio.ensure_future(self._require_register())

    async def _require_register(self) -> None:
        await asyncio.sleep(REGISTER_TIMEOUT_S)
        if self.instance is None and not self._register_received:
            await self.send_error("register_timeout", "send register as the first frame")
            await self.close(code=CLOSE_BAD_REGISTER)

    async def disconnect(self, code: int) -> None:
        admission.release_for(self.base_send)  # refused or gone before registering: the slot is free
        for task in (self._register_timer, self._poll_task):
            if task is not None:
                task.cancel()
        # Both within daphne's 10 s before it cancels a disconnected application.
        begun = time.monotonic()
        await self._finish_frames(DISCONNECT_FRAMES_S)
        await self._finish_fan_out(max(1.0, DISCONNECT_BUDGET_S - (time.monotonic() - begun)))
        if self.instance is None:
            return
        instance, agent = self.instance, self.agent
        if self._counted:
            HUB_CONNECTIONS.labels(agent.platform).dec()
        await database_sync_to_async(rows.disconnect_instance)(instance.pk, self.channel_name)
        try:
            await presence.unregister_instance(
                platform=agent.platform,
                agent_id=agent.agent_id,
                instance_id=instance.instance_id,
                channel=self.channel_name,
            )
        except Exception:  # Redis down: the keys expire on their own
            log.exception("presence cleanup failed for %s/%s", agent.agent_id, instance.instance_id)
        await database_sync_to_async(_emit)(
            "agent.disconnected",
            {
                "agent_id": agent.agent_id,
                "instance_id": instance.instance_id,
                "was_leader": self.is_leader,
                "code": code,
            },
        )

    # --- frames from the agent ------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raw: str | bytes | None = text_data if text_data is not None else bytes_data
        if raw is None:
            return
        size = len(raw) if isinstance(raw, bytes) or len(raw) * 4 <= protocol.MAX_FRAME_BYTES else len(raw.encode())
        if size > protocol.MAX_FRAME_BYTES:
            await self.close(code=1009)
            return
        try:
            frame = protocol.decode(raw, protocol.AGENT_MESSAGES)
        except protocol.ProtocolError as exc:
            await self.send_error(exc.code, exc.message, reply_to=None)
            if self.instance is None:
                await self.close(code=CLOSE_BAD_REGISTER)
            return
        if frame.type == "register":
            self._register_received = True
        elif self.instance is None:
            await self.send_error("not_registered", "the first frame must be register", reply_to=frame.id)
            await self.close(code=CLOSE_BAD_REGISTER)
            return
        try:
            await getattr(self, f"on_{frame.type}")(frame)
        except Exception:
            log.exception("hub failed on %s frame from %s", frame.type, self.agent.agent_id)
            await self.send_error(
                "internal_error", f"the control plane could not process {frame.type}", reply_to=frame.id
            )

    async def on_register(self, frame: protocol.Frame) -> None:
        hello: protocol.Register = frame.payload
        agent = self.agent
        if hello.agent_id != agent.agent_id or hello.platform != agent.platform:
            await self.send_error(
                "agent_mismatch", f"this token belongs to {agent.agent_id} ({agent.platform})", reply_to=frame.id
            )
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.instance, announcements = await batcher(rows.register_many).submit(
            rows.Registration(agent, hello, settings.POD_NAME, self.channel_name)
        )
        self._fan_out(announcements)
        self.is_leader = hello.is_leader
        self._db_capacity = protocol.to_dict(hello.capacity)
        await batcher(presence.register_instances).submit(
            presence.Arrival(
                platform=agent.platform,
                agent_id=agent.agent_id,
                instance_id=hello.instance_id,
                pod=settings.POD_NAME,
                channel=self.channel_name,
                is_leader=hello.is_leader,
                metadata={
                    "agent_id": agent.agent_id,
                    "platform": agent.platform,
                    "version": hello.version,
                    "hostname": hello.hostname,
                    "capacity": protocol.to_dict(hello.capacity),
                },
            )
        )
        await self.send_frame(
            protocol.Registered(
                heartbeat_interval_s=float(settings.AGENT_HEARTBEAT_INTERVAL_S), instance_id=hello.instance_id
            )
        )
        admission.release_for(self.base_send)  # the next waiting handshake goes on (§13.2)
        await batcher(rows.after_register_many).submit((agent, hello))
        HUB_CONNECTIONS.labels(agent.platform).inc()
        self._counted = True
        if hello.is_leader:  # its siblings were demoted in the registry with its arrival
            self._start_polling()

    async def on_heartbeat(self, frame: protocol.Frame) -> None:
        beat: protocol.Heartbeat = frame.payload
        if beat.is_leader != self.is_leader:
            await self._leadership(beat.is_leader)
        await self._refresh_presence()
        now = time.monotonic()
        capacity = protocol.to_dict(beat.capacity)
        if capacity != self._db_capacity or now - self._last_db_heartbeat >= settings.AGENT_HEARTBEAT_DB_WRITE_S:
            self._last_db_heartbeat, self._db_capacity = now, capacity
            await batcher(rows.record_heartbeats).submit((self.instance.pk, beat))

    async def on_ack(self, frame: protocol.Frame) -> None:
        self._queue_frame(frame)

    async def on_result(self, frame: protocol.Frame) -> None:
        self._queue_frame(frame)

    async def on_session_status(self, frame: protocol.Frame) -> None:
        self._queue_frame(frame)

    async def on_leader(self, frame: protocol.Frame) -> None:
        await self._leadership(frame.payload.is_leader)

    async def _refresh_presence(self) -> None:
        """This instance is alive on this replica, as leader or not (presence's TTLs restart)."""
        await batcher(presence.heartbeats).submit(
            presence.Beat(
                platform=self.agent.platform,
                agent_id=self.agent.agent_id,
                instance_id=self.instance.instance_id,
                pod=settings.POD_NAME,
                channel=self.channel_name,
                is_leader=self.is_leader,
            )
        )

    async def _leadership(self, is_leader: bool) -> None:
        await self._frames_applied()  # what the agent said before this, applied before it
        took_over_at = timezone.now()
        changed = await database_sync_to_async(rows.set_leader)(self.agent, self.instance.pk, is_leader)
        self.is_leader = is_leader
        await self._refresh_presence()
        if is_leader:
            await presence.demote_others(agent_id=self.agent.agent_id, instance_id=self.instance.instance_id)
        if changed:
            await database_sync_to_async(_emit)(
                "agent.leader_changed",
                {"agent_id": self.agent.agent_id, "instance_id": self.instance.instance_id, "is_leader": is_leader},
            )
        if is_leader:
            await self._take_over(took_over_at)

    async def _take_over(self, took_over_at: Any) -> None:
        """As the new leader: unacked commands go back to pending, then everything pending is sent."""
        await database_sync_to_async(rows.requeue_unacked)(self.agent, sent_before=took_over_at)
        await database_sync_to_async(dispatch.send_pending_commands)(self.agent.pk)
        self._start_polling()

    def _start_polling(self) -> None:
        if settings.AGENT_PENDING_POLL_S and (self._poll_task is None or self._poll_task.done()):
            self._poll_task = asyncio.ensure_future(self._poll_pending())

    async def _poll_pending(self) -> None:
        """Embedded mode only (no shared channel layer): pick up commands other processes queued."""
        while self.is_leader:
            await asyncio.sleep(settings.AGENT_PENDING_POLL_S)
            if self.is_leader:
                await database_sync_to_async(dispatch.send_pending_commands)(self.agent.pk)

    # --- acks, results and statuses: applied in bursts (agents_app/hub/frames.py) ------------
    def _queue_frame(self, frame: protocol.Frame) -> None:
        """Queue a frame for :func:`frames.apply`: the consumer goes on reading frames (and
        forwarding commands) while the worker applies what queued up, in order."""
        if self._frame_queue is None:
            self._frame_queue = asyncio.Queue()
            self._frame_task = asyncio.ensure_future(self._frame_worker(self._frame_queue))
        self._frame_queue.put_nowait(frame)

    async def _frame_worker(self, queue: asyncio.Queue) -> None:
        while True:
            taken = [await queue.get()]
            while not queue.empty() and len(taken) < frames.MAX_BATCH:
                taken.append(queue.get_nowait())
            try:
                replies = await self._apply(frames.apply, self.agent, taken)
            except Exception:  # the transaction itself failed: so did every frame of it
                log.exception("hub failed on %d frames from %s", len(taken), self.agent.agent_id)
                replies = [frames.internal_error(frame) for frame in taken]
            try:
                for reply in replies:
                    await self.send_error(reply.code, reply.message, reply_to=reply.reply_to)
            except Exception:  # the socket is gone: the frames are applied all the same
                log.info("could not answer %d frames of %s", len(replies), self.agent.agent_id)
            finally:
                for _ in taken:
                    queue.task_done()

    async def _frames_applied(self, timeout_s: float | None = None) -> None:
        """Wait until every queued frame is applied."""
        if self._frame_queue is not None:
            await asyncio.wait_for(self._frame_queue.join(), timeout_s)

    async def _finish_frames(self, timeout_s: float) -> None:
        """On disconnect: apply what the agent sent before it went, then stop the worker."""
        if self._frame_task is None:
            return
        try:
            await self._frames_applied(timeout_s)
        except TimeoutError:
            log.warning("frames of %s still queued after %.0f s; dropping them", self.agent.agent_id, timeout_s)
        self._frame_task.cancel()

    # --- session changes: applied on the frame path, fanned out behind it ------------------
    async def _apply(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a hub function that may change sessions; the announcements of those changes
        (:mod:`streamspace.fanout`: portal broadcasts, events) go to this connection's fan-out
        queue, so the next frame is not kept waiting for them. The queue keeps their order."""
        result, batch = await database_sync_to_async(fanout.run_deferred)(func, *args, **kwargs)
        self._fan_out(batch)
        return result

    def _fan_out(self, batch: fanout.Batch) -> None:
        """Queue announcements collected on the frame path behind it, in order."""
        if batch:
            if self._fan_out_queue is None:
                self._fan_out_queue = asyncio.Queue()
                self._fan_out_task = asyncio.ensure_future(self._fan_out_worker(self._fan_out_queue))
            self._fan_out_queue.put_nowait(batch)

    @staticmethod
    async def _fan_out_worker(queue: asyncio.Queue) -> None:
        while True:
            batch = await queue.get()
            taken = 1
            while not queue.empty():  # everything queued meanwhile goes out together
                batch = batch + queue.get_nowait()
                taken += 1
            try:
                await database_sync_to_async(_flush, thread_sensitive=not settings.AGENT_HUB_FAN_OUT_THREADS)(batch)
            except Exception:
                log.exception("session fan-out failed")
            finally:
                for _ in range(taken):
                    queue.task_done()

    async def _finish_fan_out(self, timeout_s: float = 10.0) -> None:
        """On disconnect: let queued broadcasts and events go out, then stop the worker."""
        if self._fan_out_task is None:
            return
        try:
            await asyncio.wait_for(self._fan_out_queue.join(), timeout_s)
        except TimeoutError:
            log.warning("session fan-out still busy after %.0f s; dropping the rest", timeout_s)
        self._fan_out_task.cancel()

    # --- messages from the channel layer (any replica) ------------------------------------
    async def agent_command(self, event: dict[str, Any]) -> None:
        payload = event["payload"]
        if not self.is_leader:
            # Leadership moved after the sender looked it up: hand the command back.
            await database_sync_to_async(self._return_command)(payload["command_id"])
            return
        await self.send_frame(protocol.Command(**payload))

    def _return_command(self, command_id: str) -> None:
        AgentCommand.objects.filter(pk=command_id, state=CommandState.SENT).update(state=CommandState.PENDING)
        dispatch.send_pending_commands(self.agent.pk)

    async def agent_tunnel_open(self, event: dict[str, Any]) -> None:
        await self.send_frame(protocol.TunnelOpen(**event["payload"]))

    # --- helpers -----------------------------------------------------------------------------
    async def send_frame(self, payload: protocol.Payload) -> None:
        await self.send(text_data=protocol.encode(payload))

    async def send_error(self, code: str, message: str, *, reply_to: str | None = None) -> None:
        await self.send(
            text_data=protocol.encode(protocol.Error(code=code, message=message[:1000]), frame_id=reply_to or None)
        )

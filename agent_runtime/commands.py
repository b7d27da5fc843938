"""Command execution: ack first, in order per session, concurrently across sessions, once.

* A ``command`` frame is acknowledged (``ack``) before any work starts, then queued on its
  session's lane; each lane runs one command at a time, lanes run concurrently.
* Commands are de-duplicated by ``command_id`` in a bounded LRU: a duplicate of a command
  still running is acknowledged again, a duplicate of a finished one gets its ``result``
  again, and neither runs twice.
* Only the leader executes. A command reaching a follower (or a leader whose mandate ran
  out) is not acknowledged, so the control plane's command sweep sends it again to the
  real leader; a leader that loses its mandate between ack and execution answers
  ``result`` ok=false ``not_leader``.
* Malformed commands (unknown action, bad session id, invalid spec, bad image) get a
  ``result`` with ok=false and an error the user can act on; nothing here raises out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from agent_runtime.backends.base import Backend, BackendError, SessionSpec
from agent_runtime.protocol import Ack, Command, InventoryItem, Payload, Result, SessionStatus, to_dict

log = logging.getLogger(__name__)

ACTIONS = ("start_session", "stop_session", "hibernate_session", "wake_session")
SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
SEEN_LIMIT = 4096
READY_POLL_S = 0.25

Send = Callable[[Payload], Awaitable[None]]


def status_frame(item: InventoryItem, message: str | None = None) -> SessionStatus:
    return SessionStatus(
        session_id=item.session_id,
        state=item.state,
        streaming_ready=item.streaming_ready,
        streaming_port=item.streaming_port,
        endpoint=item.endpoint,
        message=message,
    )


class CommandExecutor:
    def __init__(
        self,
        backend: Backend,
        send: Send,
        *,
        is_leader: Callable[[], bool],
        on_refused: Callable[[], None] = lambda: None,
        ready_timeout: float = 300.0,
        seen_limit: int = SEEN_LIMIT,
    ):
        self.backend = backend
        self.send = send
        self.is_leader = is_leader
        self.on_refused = on_refused
        self.ready_timeout = ready_timeout
        self.seen_limit = seen_limit
        self._seen: OrderedDict[str, Result | None] = OrderedDict()  # None while running
        self._lanes: dict[str, deque[Command]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self.reported: dict[str, InventoryItem] = {}  # last status sent per session
        self.accepting = True
        self.timings: deque[tuple[str, float]] = deque(maxlen=1000)  # (action, seconds) for benchmarks

    # --- intake ---------------------------------------------------------------------------
    async def submit(self, command: Command) -> None:
        """Handle one ``command`` frame (acks before returning; the work runs in a lane)."""
        cid = command.command_id
        if cid in self._seen:
            self._seen.move_to_end(cid)
            previous = self._seen[cid]
            log.info("duplicate command", extra={"command_id": cid, "finished": previous is not None})
            await self.send(previous if previous is not None else Ack(command_id=cid))
            return
        if not self.accepting:
            log.info("shutting down; command left for the next leader", extra={"command_id": cid})
            return
        if not self.is_leader():
            log.warning("command refused: not the leader", extra={"command_id": cid, "action": command.action})
            self.on_refused()
            return
        self._remember(cid, None)
        await self.send(Ack(command_id=cid))
        error = self._validate(command)
        if error:
            await self._finish(command, Result(command_id=cid, ok=False, error=error))
            return
        self._lanes.setdefault(command.session_id, deque()).append(command)
        if command.session_id not in self._workers:
            self._workers[command.session_id] = asyncio.create_task(self._lane(command.session_id))

    async def reject_malformed(self, command_id: str, error: str) -> None:
        """A command frame that failed validation but named its id: answer it, once."""
        if command_id in self._seen:
            return
        self._remember(command_id, None)
        await self.send(Ack(command_id=command_id))
        await self._finish_id(command_id, Result(command_id=command_id, ok=False, error=error))

    @staticmethod
    def _validate(command: Command) -> str | None:
        if command.action not in ACTIONS:
            return f"unknown action {command.action!r} (expected one of: {', '.join(ACTIONS)})"
        if not SESSION_ID.match(command.session_id or ""):
            return f"invalid session_id {command.session_id!r}"
        return None

    def _remember(self, cid: str, result: Result | None) -> None:
        self._seen[cid] = result
        self._seen.move_to_end(cid)
        while len(self._seen) > self.seen_limit:
            oldest, value = next(iter(self._seen.items()))
            if value is None:  # never forget a running command; the LRU may overshoot briefly
                break
            self._seen.popitem(last=False)

    # --- execution ------------------------------------------------------------------------
    async def _lane(self, session_id: str) -> None:
        lane = self._lanes[session_id]
        try:
            while lane:
                await self._execute(lane.popleft())
        finally:
            # No await between the emptiness check above and this cleanup: a command queued
            # meanwhile would have found the worker still registered.
            self._lanes.pop(session_id, None)
            self._workers.pop(session_id, None)

    async def _execute(self, command: Command) -> None:
        cid, sid = command.command_id, command.session_id
        if not self.is_leader():
            self.on_refused()
            # Forgotten, not remembered: if this command comes back when we lead again, run it.
            self._seen.pop(cid, None)
            await self.send(Result(command_id=cid, ok=False, error="not_leader: leadership lost before executing"))
            return
        self._cancel_watcher(sid)
        started = time.monotonic()
        try:
            spec = SessionSpec.parse(command.spec)
            item = await self._run(command.action, sid, spec)
        except BackendError as exc:
            log.warning(
                "command failed",
                extra={"command_id": cid, "action": command.action, "session_id": sid, "error": str(exc)},
            )
            await self._finish(command, Result(command_id=cid, ok=False, error=str(exc)))
            return
        except Exception as exc:
            log.exception("command crashed", extra={"command_id": cid, "action": command.action, "session_id": sid})
            await self._finish(command, Result(command_id=cid, ok=False, error=f"internal agent error: {exc!r}"))
            return
        elapsed = time.monotonic() - started
        self.timings.append((command.action, elapsed))
        log.info(
            "command done",
            extra={
                "command_id": cid,
                "action": command.action,
                "session_id": sid,
                "seconds": round(elapsed, 3),
                "state": item.state,
            },
        )
        await self._finish(command, Result(command_id=cid, ok=True, data=to_dict(item)))
        await self.report(item)
        if item.state == "running" and not item.streaming_ready:
            self._watchers[sid] = asyncio.create_task(self._watch_ready(sid))

    async def _run(self, action: str, session_id: str, spec: SessionSpec) -> InventoryItem:
        if action == "start_session":
            return await self.backend.start(session_id, spec)
        if action == "wake_session":
            return await self.backend.wake(session_id, spec)
        if action == "hibernate_session":
            return await self.backend.hibernate(session_id)
        return await self.backend.stop(session_id, spec)

    async def _finish(self, command: Command, result: Result) -> None:
        await self._finish_id(command.command_id, result)

    async def _finish_id(self, cid: str, result: Result) -> None:
        self._remember(cid, result)
        await self.send(result)

    # --- status ---------------------------------------------------------------------------
    async def report(self, item: InventoryItem, message: str | None = None) -> None:
        if item.state == "stopped":
            self.reported.pop(item.session_id, None)
        else:
            self.reported[item.session_id] = item
        await self.send(status_frame(item, message))

    async def _watch_ready(self, session_id: str) -> None:
        """Poll until the session's port answers HTTP, then report ``streaming_ready``."""
        deadline = time.monotonic() + self.ready_timeout
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(READY_POLL_S)
                item = await self.backend.status(session_id)
                if item.state != "running":
                    await self.report(item, "the session stopped before it was ready")
                    return
                if item.streaming_ready:
                    await self.report(item)
                    return
            log.warning("session never became ready", extra={"session_id": session_id, "timeout": self.ready_timeout})
        except BackendError as exc:
            log.warning("readiness check failed", extra={"session_id": session_id, "error": str(exc)})
        finally:
            if self._watchers.get(session_id) is asyncio.current_task():
                del self._watchers[session_id]

    def _cancel_watcher(self, session_id: str) -> None:
        task = self._watchers.pop(session_id, None)
        if task is not None:
            task.cancel()

    def busy(self, session_id: str) -> bool:
        return session_id in self._workers or session_id in self._watchers

    async def reconcile(self) -> None:
        """Report sessions whose observed state changed behind our back (a crash, a removal)."""
        try:
            observed = {item.session_id: item for item in await self.backend.inventory()}
        except BackendError as exc:
            log.warning("inventory failed", extra={"error": str(exc)})
            return
        for sid, item in observed.items():
            if self.busy(sid):
                continue
            before = self.reported.get(sid)
            if before is None or (before.state, before.streaming_ready, before.endpoint) != (
                item.state,
                item.streaming_ready,
                item.endpoint,
            ):
                await self.report(item)
        for sid, before in list(self.reported.items()):
            if sid not in observed and not self.busy(sid) and before.state != "stopped":
                await self.report(InventoryItem(session_id=sid, state="stopped"), "the workload is gone")

    # --- shutdown -------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return sum(1 for value in self._seen.values() if value is None)

    async def drain(self, timeout: float) -> bool:
        """Stop taking commands and wait for running ones. True if all finished in time."""
        self.accepting = False
        for task in list(self._watchers.values()):
            task.cancel()
        workers = list(self._workers.values())
        if not workers:
            return True
        done, pending = await asyncio.wait(workers, timeout=timeout)
        return not pending


def command_id_of(raw: Any) -> str | None:
    """The ``command_id`` of a raw (possibly invalid) command frame, if it has a usable one."""
    try:
        envelope = json.loads(raw)
        cid = envelope["payload"]["command_id"]
    except (ValueError, TypeError, KeyError):
        return None
    return cid if isinstance(cid, str) and 0 < len(cid) <= 128 else None

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
* **A launch is fenced.** The backend checks the mandate (:meth:`leading`) immediately
  before each side-effecting call of a start or wake (create, start) and right after it
  returns; a leader that lost it meanwhile (paused by SIGSTOP or a stuck call while another
  replica took over and acted on the session) undoes only what that call did, identified by
  what it alone knows (the id the platform returned for the workload it created, the
  platform's word that this call started it), and answers ``result`` ok=false
  ``not_leader`` (:class:`~agent_runtime.backends.base.MandateLost`). The command is
  forgotten, so it runs if it comes back while this replica leads again.
* Malformed commands (unknown action, bad session id, invalid spec, bad image) get a
  ``result`` with ok=false and an error the user can act on; nothing here raises out.
* **A dead workload is reported as failed**, with its exit status and the tail of its
  output, as soon as the backend notices (:meth:`CommandExecutor.exited`, queued on the
  session's lane so it follows the command that may have caused it), when the readiness
  watch finds it gone, or at the latest at the next periodic check (:meth:`reconcile`). A
  session counts as dead when this agent last reported it running (or was launching it)
  and the backend no longer sees it running; an exit the agent caused (stop, hibernate) is
  therefore never a failure.
* **Launch progress**: a start or wake is timed step by step (:mod:`agent_runtime.progress`):
  the backend's steps (image, workload), then waiting for the stream and ready. Each step
  goes out as a ``session_status`` with ``progress`` (state ``starting`` or ``waking`` while
  the command runs), and the statuses that end the launch carry the final steps. Every such
  status carries every step so far, so a step's status waits ``progress_delay`` seconds and
  is dropped if a newer status of the session (or the launch's end) supersedes it meanwhile:
  a launch whose steps take longer is shown step by step, a fast one costs the control plane
  no status frames beyond the ones that end it. The status of a workload that runs but does
  not answer yet is such a status too. A step's status never goes out after a newer status
  of its session.
* **Only the leader reports.** Every ``session_status`` goes out only while this replica
  leads: a leader paused in the middle of a command (SIGSTOP, a stuck call) that resumes
  after another took over finishes the command and answers its ``result``, but says nothing
  about the session, whose workload the new leader may have changed meanwhile.
* **Readiness** is polled from right after the start, first every
  ``READY_POLL_FIRST_S`` and backing off to every ``READY_POLL_S``: most workloads answer
  within a fraction of a second of starting. A backend that sees the workload's port open
  cheaply (the local one) cuts the pause short, so the probe follows the port's opening.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agent_runtime.backends.base import Backend, BackendError, MandateLost, SessionSpec, WorkloadExit
from agent_runtime.progress import LaunchProgress
from agent_runtime.protocol import (
    STEP_READY,
    STEP_STREAM,
    Ack,
    Command,
    InventoryItem,
    Payload,
    ProgressStep,
    Result,
    SessionStatus,
    to_dict,
)

log = logging.getLogger(__name__)

ACTIONS = ("start_session", "stop_session", "hibernate_session", "wake_session")
SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
SEEN_LIMIT = 4096
READY_POLL_FIRST_S = 0.05
READY_POLL_S = 0.25
PROGRESS_DELAY_S = 0.1

Send = Callable[[Payload], Awaitable[None]]


_LAUNCHES = {"start_session": "starting", "wake_session": "waking"}


def status_frame(
    item: InventoryItem,
    message: str | None = None,
    *,
    log_tail: str = "",
    progress: list[ProgressStep] | None = None,
) -> SessionStatus:
    return SessionStatus(
        session_id=item.session_id,
        state=item.state,
        streaming_ready=item.streaming_ready,
        streaming_port=item.streaming_port,
        endpoint=item.endpoint,
        message=message,
        exit_code=item.exit_code,
        log_tail=log_tail,
        progress=progress,
    )


@dataclass(frozen=True)
class ExitNotice:
    """A backend's word that a session's workload ended, queued on the session's lane."""

    session_id: str
    exit_code: int | None


def failure_message(exit: WorkloadExit, *, launching: bool) -> str:
    """The user's sentence for a dead workload ("… before the session was ready." while launching)."""
    text = exit.description.strip() or "The session's workload ended."
    if launching:
        text = text.rstrip(".") + " before the session was ready."
    return text


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
        progress_delay: float = PROGRESS_DELAY_S,
    ):
        self.backend = backend
        self.send = send
        self.is_leader = is_leader
        self.on_refused = on_refused
        self.ready_timeout = ready_timeout
        self.seen_limit = seen_limit
        self.progress_delay = progress_delay
        self._seen: OrderedDict[str, Result | None] = OrderedDict()  # None while running
        self._lanes: dict[str, deque[Command | ExitNotice]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._launches: dict[str, LaunchProgress] = {}  # sessions being started or woken, until ready
        self._progress_due: dict[str, asyncio.Task[None]] = {}  # a step's status waiting to go out
        self._waiting: dict[str, InventoryItem] = {}  # started, not answering yet: said with the steps
        self._dying: set[str] = set()  # sessions whose failure is being reported
        self.reported: dict[str, InventoryItem] = {}  # last status sent per session
        # A counter bumped whenever a session is queued work or reported, and the value of it at
        # each session's last bump: reconcile() leaves alone every session touched after its
        # inventory snapshot began (the snapshot is older than what the agent knows of it).
        self._generation = 0
        self._touched: dict[str, int] = {}
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
        log.debug(
            "command received", extra={"command_id": cid, "action": command.action, "session_id": command.session_id}
        )
        await self.send(Ack(command_id=cid))
        error = self._validate(command)
        if error:
            await self._finish(command, Result(command_id=cid, ok=False, error=error))
            return
        self._enqueue(command.session_id, command)

    def _touch(self, session_id: str) -> None:
        self._generation += 1
        self._touched[session_id] = self._generation

    def _enqueue(self, session_id: str, item: Command | ExitNotice) -> None:
        self._touch(session_id)
        self._lanes.setdefault(session_id, deque()).append(item)
        if session_id not in self._workers:
            self._workers[session_id] = asyncio.create_task(self._lane(session_id))

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
                item = lane.popleft()
                if isinstance(item, ExitNotice):
                    await self._check_exit(item)
                else:
                    await self._execute(item)
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
        launch = None
        if command.action in _LAUNCHES:
            launch = self._launches[sid] = LaunchProgress(_LAUNCHES[command.action])
        else:
            self._launches.pop(sid, None)
        try:
            spec = SessionSpec.parse(command.spec)
            item = await self._run(command.action, sid, spec)
        except MandateLost as exc:
            log.warning("launch fenced: leadership lost", extra={"command_id": cid, "session_id": sid})
            if self._launches.get(sid) is launch:
                self._launches.pop(sid, None)
            self._supersede_progress(sid)
            self.on_refused()
            self._seen.pop(cid, None)  # as for a command refused before it ran: it may come back
            await self.send(Result(command_id=cid, ok=False, error=str(exc)))
            return
        except Exception as exc:
            if isinstance(exc, BackendError):
                error = str(exc)
                log.warning(
                    "command failed",
                    extra={"command_id": cid, "action": command.action, "session_id": sid, "error": error},
                )
            else:
                error = f"internal agent error: {exc!r}"
                log.exception("command crashed", extra={"command_id": cid, "action": command.action, "session_id": sid})
            if launch is not None and self._launches.pop(sid, None) is launch:
                # The steps end with the failure: the active step fails with the error, or the
                # step the backend already marked failed goes out now if its status is still
                # waiting (it would otherwise be dropped with the launch).
                active, unsent = launch.current is not None, sid in self._progress_due
                if active:
                    launch.fail(error[:200])
                if active or unsent:
                    self._supersede_progress(sid)
                    await self._send_status(
                        SessionStatus(session_id=sid, state=launch.state_name, progress=launch.steps())
                    )
            await self._finish(command, Result(command_id=cid, ok=False, error=error))
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
        if launch is None:
            await self.report(item)
        elif item.state != "running":  # the workload ended while it was being started
            await self._report_death(sid, item)
        elif item.streaming_ready:
            await self._ready(sid, item)
        else:
            launch.update(STEP_STREAM, f"Waiting for the session to answer on port {item.streaming_port}")
            # Running, not yet answering: said like a step (dropped if the session answers
            # within the delay, as the ready status then says it all).
            self.reported[sid] = self._waiting[sid] = item
            self._progress_soon(sid, launch)
            self._watchers[sid] = asyncio.create_task(self._watch_ready(sid, item))

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

    # --- what the backend reports on its own (BackendListener) ------------------------------
    def leading(self) -> bool:
        """Whether this replica leads now: the mandate a backend checks around a launch's steps."""
        return self.is_leader()

    async def step(self, session_id: str, step: str, label: str, state: str) -> None:
        """A step of a start or wake: sent at once, with every step of the launch so far."""
        launch = self._launches.get(session_id)
        if launch is None:
            return
        launch.update(step, label, state)
        self._progress_soon(session_id, launch)

    def _progress_soon(self, session_id: str, launch: LaunchProgress) -> None:
        if session_id not in self._progress_due:
            self._progress_due[session_id] = asyncio.create_task(self._send_progress(session_id, launch))

    async def _send_progress(self, session_id: str, launch: LaunchProgress) -> None:
        """After ``progress_delay``: the launch's steps so far (with the running workload once
        the start is done), unless a newer status of the session went out meanwhile (it
        cancelled this) or the launch is over."""
        await asyncio.sleep(self.progress_delay)
        if self._progress_due.get(session_id) is asyncio.current_task():
            del self._progress_due[session_id]  # from here on nothing cancels it: it goes out first
        if self._launches.get(session_id) is launch:
            item = self._waiting.pop(session_id, None)
            if item is not None:
                await self._send_status(status_frame(item, progress=launch.steps()))
            else:
                await self._send_status(
                    SessionStatus(session_id=session_id, state=launch.state_name, progress=launch.steps())
                )

    def _supersede_progress(self, session_id: str) -> None:
        """A newer status of ``session_id`` goes out now: a step's status still waiting is dropped."""
        self._waiting.pop(session_id, None)
        task = self._progress_due.pop(session_id, None)
        if task is not None:
            task.cancel()

    def exited(self, session_id: str, exit_code: int | None) -> None:
        """A workload ended: checked on the session's lane, after the command running there."""
        if self.accepting and SESSION_ID.match(session_id):
            self._enqueue(session_id, ExitNotice(session_id, exit_code))

    async def _check_exit(self, notice: ExitNotice) -> None:
        sid = notice.session_id
        before = self.reported.get(sid)
        if not self.is_leader() or before is None or before.state != "running":
            return  # not ours to report, or an exit this agent caused (stop, hibernate)
        try:
            item = await self.backend.status(sid)
        except BackendError as exc:
            log.warning("status after an exit failed", extra={"session_id": sid, "error": str(exc)})
            return
        if item.state == "running":
            return  # running again since (a wake): the notice is stale
        if item.exit_code is None and notice.exit_code is not None:
            item = InventoryItem(
                session_id=sid, state=item.state, streaming_port=item.streaming_port, exit_code=notice.exit_code
            )
        await self._report_death(sid, item)

    async def _report_death(self, session_id: str, observed: InventoryItem) -> None:
        """Report ``session_id`` as failed: how its workload ended, the tail of its output and
        (while it was being launched) the launch's steps with the one it died in failed."""
        if session_id in self._dying:
            return
        self._dying.add(session_id)
        try:
            self._cancel_watcher(session_id)
            try:
                exit = await self.backend.exit_info(session_id)
            except Exception as exc:  # the failure is reported without the details
                log.warning("exit_info failed", extra={"session_id": session_id, "error": repr(exc)})
                exit = WorkloadExit()
            launch = self._launches.pop(session_id, None)
            message = failure_message(exit, launching=launch is not None)
            progress = None
            if launch is not None:
                launch.fail(exit.description)
                progress = launch.steps()
            code = exit.exit_code if exit.exit_code is not None else observed.exit_code
            failed = InventoryItem(
                session_id=session_id, state="failed", streaming_port=observed.streaming_port, exit_code=code
            )
            log.warning("session workload ended", extra={"session_id": session_id, "exit_code": code})
            await self.report(failed, message, log_tail=exit.log_tail, progress=progress)
        finally:
            self._dying.discard(session_id)

    # --- status ---------------------------------------------------------------------------
    async def report(
        self,
        item: InventoryItem,
        message: str | None = None,
        *,
        log_tail: str = "",
        progress: list[ProgressStep] | None = None,
    ) -> None:
        """Send a session's status, and remember it as reported; only while leader (a replica
        that is not leading knows nothing current: :meth:`_send_status`)."""
        if not self._leading(item.session_id, item.state):
            return  # not remembered either: a reconcile as leader again reports it
        self._touch(item.session_id)
        if item.state == "stopped":
            self.reported.pop(item.session_id, None)
        else:
            self.reported[item.session_id] = item
        self._supersede_progress(item.session_id)
        await self.send(status_frame(item, message, log_tail=log_tail, progress=progress))

    def _leading(self, session_id: str, state: str) -> bool:
        """Whether this replica may say anything about its sessions now: only the leader may.
        A replica that lost its mandate in the middle of a command (paused, cut off from the
        lease) and carries on when it resumes sees what the new leader did meanwhile (a
        hibernated container looks like a dead one) and must not report it; the new leader
        reported every session when it took over and reports their changes."""
        if self.is_leader():
            return True
        log.info("status not sent: not the leader", extra={"session_id": session_id, "state": state})
        return False

    async def _send_status(self, frame: SessionStatus) -> None:
        """A status that is not a report (a launch's steps): sent only while leader."""
        if self._leading(frame.session_id, frame.state):
            await self.send(frame)

    async def _ready(self, session_id: str, item: InventoryItem) -> None:
        """The launch is over: the session streams."""
        launch = self._launches.pop(session_id, None)
        progress = None
        if launch is not None:
            launch.update(STEP_STREAM, f"The session answers on port {item.streaming_port}", "done")
            launch.update(STEP_READY, "Ready", "done")
            progress = launch.steps()
        log.info("session ready", extra={"session_id": session_id, "port": item.streaming_port})
        await self.report(item, progress=progress)

    async def _watch_ready(self, session_id: str, item: InventoryItem) -> None:
        """Probe until the session's port answers HTTP, then report ``streaming_ready``; a
        workload that ends meanwhile is reported as failed. Between probes the backend
        waits (:meth:`~agent_runtime.backends.base.Backend.until_answering`): at most the
        back-off's pause, less when it sees the port open."""
        deadline = time.monotonic() + self.ready_timeout
        pause = READY_POLL_FIRST_S
        try:
            while time.monotonic() < deadline:
                await self.backend.until_answering(session_id, item, pause)
                pause = min(pause * 2, READY_POLL_S)
                item = await self.backend.status(session_id)
                if item.state != "running":
                    await self._report_death(session_id, item)
                    return
                if item.streaming_ready:
                    await self._ready(session_id, item)
                    return
            log.warning("session never became ready", extra={"session_id": session_id, "timeout": self.ready_timeout})
            launch = self._launches.get(session_id)
            if launch is not None:
                launch.fail(f"The session did not answer within {self.ready_timeout:.0f} s")
                self._supersede_progress(session_id)
                await self._send_status(status_frame(item, progress=launch.steps()))
        except BackendError as exc:
            log.warning("readiness check failed", extra={"session_id": session_id, "error": str(exc)})
        finally:
            if self._watchers.get(session_id) is asyncio.current_task():
                del self._watchers[session_id]

    def _cancel_watcher(self, session_id: str) -> None:
        task = self._watchers.get(session_id)
        if task is not None and task is not asyncio.current_task():
            del self._watchers[session_id]
            task.cancel()

    def busy(self, session_id: str) -> bool:
        return session_id in self._workers or session_id in self._watchers

    async def reconcile(self) -> None:
        """Report sessions whose observed state changed behind our back (a crash, a removal).

        A session that got work or a report while the inventory was being taken is skipped:
        the snapshot may predate it (a session started meanwhile is absent from it, one stopped
        meanwhile still in it), and the next reconcile sees it as it is."""
        snapshot = self._generation
        try:
            observed = {item.session_id: item for item in await self.backend.inventory()}
        except BackendError as exc:
            log.warning("inventory failed", extra={"error": str(exc)})
            return

        def moved(sid: str) -> bool:
            return self._touched.get(sid, 0) > snapshot

        for sid, item in observed.items():
            if self.busy(sid) or moved(sid):
                continue
            before = self.reported.get(sid)
            if before is not None and before.state == "running" and item.state != "running":
                await self._report_death(sid, item)
            elif before is None or (before.state, before.streaming_ready, before.endpoint) != (
                item.state,
                item.streaming_ready,
                item.endpoint,
            ):
                await self.report(item)
        for sid, before in list(self.reported.items()):
            if sid not in observed and not self.busy(sid) and not moved(sid) and before.state != "stopped":
                gone = InventoryItem(session_id=sid, state="stopped")
                if before.state == "running":
                    await self._report_death(sid, gone)
                else:
                    await self.report(gone, "the workload is gone")
        # Bumps before this snapshot matter to no later one (those begin later still).
        self._touched = {sid: generation for sid, generation in self._touched.items() if generation > snapshot}

    # --- shutdown -------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return sum(1 for value in self._seen.values() if value is None)

    async def drain(self, timeout: float) -> bool:
        """Stop taking commands and wait for running ones. True if all finished in time."""
        self.accepting = False
        for task in [*self._watchers.values(), *self._progress_due.values()]:
            task.cancel()
        self._progress_due.clear()
        self._waiting.clear()
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

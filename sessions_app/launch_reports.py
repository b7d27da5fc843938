"""What an agent reports about a session besides its state: launch progress, and how a dead
workload ended (exit status, the tail of its output).

``agent_reports`` calls these in the transaction that applies the report's state, so the
portal broadcast of a state change already carries them. Everything stored is bounded:

* ``Session.launch_progress``: at most ``protocol.PROGRESS_MAX_STEPS`` steps, each
  ``{step, label, state, at_s, duration_s}`` with short strings, replaced by each report
  that carries progress (the agent sends every step of the launch each time);
* ``Session.exit_code``: set when the report fails the session (or finds it failed);
* ``SessionLog``: the output tail of a failure, at most :data:`LOG_TAIL_MAX_CHARS`
  characters, masked with ``streamspace.logredact`` (the agent masked it too).

A report that changes only these (a progress step while the state stays ``starting``) is
broadcast to the owner's portal sockets without an event: events are for state changes.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from agent_runtime import protocol
from sessions_app.api.representation import represent_many
from sessions_app.models import Session, SessionLog, SessionState
from sessions_app.notify import user_group
from streamspace import fanout
from streamspace.logredact import redact

log = logging.getLogger(__name__)

S = SessionState
LOG_TAIL_MAX_CHARS = protocol.LOG_TAIL_MAX_BYTES
STEP_NAME_MAX = 32
STEP_LABEL_MAX = 200
_STEP_STATES = frozenset(protocol.STEP_STATES)
# States the agent cannot legitimately report for a session the control plane holds as
# running: the workload stopped without being asked (a crash the platform shows as a stopped
# container), which is a failure.
_STOPPED_ON_ITS_OWN = {(S.RUNNING, S.HIBERNATED)}


def effective_state(current: str, reported: str) -> str:
    """The state a report means for a session in ``current``: a workload reported stopped
    (hibernated) while the session runs, with no hibernation asked for, has failed."""
    return S.FAILED if (current, reported) in _STOPPED_ON_ITS_OWN else reported


def stopped_on_its_own(exit_code: int | None) -> str:
    """The status message of a session whose workload stopped without being asked."""
    status = f" (exit code {exit_code})" if exit_code is not None else ""
    return f"The session's workload stopped on its own{status}."


def is_failure(current: str, target: str) -> bool:
    """Whether a report of ``target`` fails (or finds failed) a session in ``current``."""
    if current == S.STOPPED:
        return False
    return target == S.FAILED or (target == S.STOPPED and current != S.STOPPING)


def progress_rows(steps: list[protocol.ProgressStep]) -> list[dict[str, Any]]:
    """The stored (and served) form of reported steps: bounded, normalised, JSON-safe."""
    rows = []
    for step in steps[-protocol.PROGRESS_MAX_STEPS :]:
        rows.append(
            {
                "step": step.step[:STEP_NAME_MAX],
                "label": step.label[:STEP_LABEL_MAX],
                "state": step.state if step.state in _STEP_STATES else "done",
                "at_s": _seconds(step.at_s),
                "duration_s": None if step.duration_s is None else _seconds(step.duration_s),
            }
        )
    return rows


def _seconds(value: float) -> float:
    return round(value, 3) if math.isfinite(value) and 0 <= value < 1e9 else 0.0


def bounded_log(text: str) -> tuple[str, bool]:
    """``text`` masked and cut to its last :data:`LOG_TAIL_MAX_CHARS` characters (whole lines
    where possible); the flag says whether anything was cut."""
    text = redact(text.replace("\x00", ""))
    if len(text) <= LOG_TAIL_MAX_CHARS:
        return text, False
    cut = text[-LOG_TAIL_MAX_CHARS:]
    return (cut.split("\n", 1)[1] if "\n" in cut else cut), True


def record(
    session: Session,
    *,
    failing: bool,
    exit_code: int | None = None,
    log_tail: str = "",
    progress: list[protocol.ProgressStep] | None = None,
) -> bool:
    """Store a report's progress and, for a failure, its exit status and output tail, on the
    (locked) ``session``. Returns True if the session's row changed."""
    fields: dict[str, Any] = {}
    if progress is not None:
        rows = progress_rows(progress)
        if rows != session.launch_progress:
            fields["launch_progress"] = rows
    if failing and exit_code is not None and exit_code != session.exit_code:
        fields["exit_code"] = exit_code
    if failing and log_tail:
        text, truncated = bounded_log(log_tail)
        SessionLog.objects.update_or_create(
            session_id=session.pk, defaults={"text": text, "truncated": truncated, "captured_at": timezone.now()}
        )
    if not fields:
        return False
    Session.objects.filter(pk=session.pk).update(**fields, updated_at=timezone.now())
    for name, value in fields.items():
        setattr(session, name, value)
    return True


def logs_body(session: Session) -> dict[str, Any]:
    """The logs endpoint's answer for ``session`` (1 query): how its workload ended (exit
    status, the tail of its output, masked again on the way out) and its launch's steps."""
    stored = SessionLog.objects.filter(session_id=session.pk).first()
    return {
        "session_id": str(session.pk),
        "state": session.state,
        "status_message": session.status_message,
        "exit_code": session.exit_code,
        "log_tail": redact(stored.text) if stored else "",
        "log_truncated": stored.truncated if stored else False,
        "captured_at": stored.captured_at if stored else None,
        "progress": session.launch_progress or [],
    }


def refreshed(session: Session) -> None:
    """On commit: send the session's representation to its owner's portal sockets (no event)."""
    session_id, user_id = session.pk, session.user_id
    transaction.on_commit(lambda: fanout.announce(_broadcast_refresh, [(session_id, user_id)]))


def _broadcast_refresh(items: list[tuple[Any, Any]], actor: Any) -> None:
    owners = {str(session_id): user_id for session_id, user_id in items}
    bodies = represent_many(Session.objects.filter(pk__in=list(owners)))
    try:
        async_to_sync(_send)([(owners[body["id"]], body) for body in bodies])
    except Exception:
        log.exception("could not broadcast %d session refresh(es)", len(bodies))


async def _send(updates: list[tuple[Any, dict[str, Any]]]) -> None:
    layer = get_channel_layer()
    for user_id, body in updates:
        await layer.group_send(user_group(user_id), {"type": "session.update", "session": body})

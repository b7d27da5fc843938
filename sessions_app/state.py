"""The session state machine (docs/architecture.md §5). Only :func:`transition` changes a state."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from sessions_app import history, metrics
from sessions_app.models import Session, SessionState
from sessions_app.notify import session_changed
from streamspace.api.errors import Conflict

S = SessionState

TRANSITIONS: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.STARTING, S.RUNNING, S.STOPPING, S.FAILED}),
    S.STARTING: frozenset({S.RUNNING, S.STOPPING, S.FAILED}),
    S.RUNNING: frozenset({S.HIBERNATING, S.STOPPING, S.FAILED}),
    S.HIBERNATING: frozenset({S.HIBERNATED, S.STOPPING, S.FAILED}),
    S.HIBERNATED: frozenset({S.WAKING, S.STOPPING, S.FAILED}),
    S.WAKING: frozenset({S.RUNNING, S.STOPPING, S.FAILED}),
    S.STOPPING: frozenset({S.STOPPED, S.FAILED}),
    S.FAILED: frozenset({S.STOPPING}),
    S.STOPPED: frozenset(),
}


class IllegalTransition(Conflict):
    code = "illegal_transition"


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def _check(current: str, target: str) -> None:
    if not can_transition(current, target):
        raise IllegalTransition(
            f"A session cannot go from {current} to {target}.",
            extra={"state": current, "target": target},
        )


def _values(target: str, message: str | None, fields: dict[str, Any]) -> dict[str, Any]:
    now = timezone.now()
    values: dict[str, Any] = {"state": target, "state_changed_at": now, "updated_at": now, **fields}
    if message is not None:
        values["status_message"] = message[:500]
    if target not in (S.RUNNING,):
        values.setdefault("streaming_ready", False)
    return values


def transition(
    session: Session, target: str, *, message: str | None = None, actor: Any = None, **fields: Any
) -> Session:
    """Move ``session`` to ``target`` if the machine allows it from its current state.

    The write is a compare-and-set on the state column, so two writers racing on the same
    session cannot both apply a transition from the same state; the loser gets
    :class:`IllegalTransition` (HTTP 409). ``fields`` are saved in the same UPDATE, and the
    state history (``sessions_app.history``) in the same transaction.
    """
    current = session.state
    _check(current, target)
    entered_current_at = session.__dict__.get("state_changed_at")  # before it is overwritten
    values = _values(target, message, fields)
    # No savepoint inside a caller's transaction: a failed write fails that transaction anyway.
    with transaction.atomic(savepoint=False):
        updated = Session.objects.filter(pk=session.pk, state=current).update(**values)
        if updated:
            history.record([session], target, values["state_changed_at"])
    if not updated:
        session.refresh_from_db(fields=["state"])
        raise IllegalTransition(
            f"The session changed state concurrently (now {session.state}).",
            extra={"state": session.state, "target": target},
        )
    for key, value in values.items():
        setattr(session, key, value)
    session_id, user_id = session.pk, session.user_id
    transaction.on_commit(lambda: session_changed(session_id, user_id, current, target, actor=actor))
    if target == S.RUNNING:
        _observe_ready(session, current, entered_current_at)
    return session


def _observe_ready(session: Session, left: str, entered_left_at: Any) -> None:
    """Time to ``running``: from the wake request, or from the launch (the session's creation)."""
    if left == S.WAKING:
        transaction.on_commit(lambda: metrics.observe_ready("wake", entered_left_at))
        return
    created = session.__dict__.get("created_at")
    if created is None:  # not loaded with the row: one small read, only on this transition
        created = Session.objects.filter(pk=session.pk).values_list("created_at", flat=True).first()
    transaction.on_commit(lambda: metrics.observe_ready("launch", created))


def transition_many(sessions: list[Session], target: str, *, message: str | None = None, **fields: Any) -> str:
    """:func:`transition` for sessions that are all in the same state, in one UPDATE.

    All move or none: if one of them changed meanwhile, :class:`IllegalTransition` is raised
    and the caller's transaction must roll back (call it under ``transaction.atomic``, with
    the rows locked). Nothing is broadcast: the caller sends ``notify.sessions_changed`` on
    commit. Returns the state they all left.
    """
    states = {session.state for session in sessions}
    if len(states) != 1:
        raise IllegalTransition(
            f"Sessions in different states ({', '.join(sorted(states))}) cannot move together.",
            extra={"state": sorted(states), "target": target},
        )
    current = states.pop()
    _check(current, target)
    values = _values(target, message, fields)
    updated = Session.objects.filter(pk__in=[session.pk for session in sessions], state=current).update(**values)
    if updated != len(sessions):
        raise IllegalTransition(
            f"{len(sessions) - updated} of the sessions changed state concurrently.",
            extra={"state": current, "target": target},
        )
    history.record(sessions, target, values["state_changed_at"])
    for session in sessions:
        for key, value in values.items():
            setattr(session, key, value)
    return current

"""The session state machine (ARCHITECTURE §3). Only :func:`transition` changes a state."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from sessions_app.models import Session, SessionState
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


def transition(
    session: Session, target: str, *, message: str | None = None, actor: Any = None, **fields: Any
) -> Session:
    """Move ``session`` to ``target`` if the machine allows it from its current state.

    The write is a compare-and-set on the state column, so two writers racing on the same
    session cannot both apply a transition from the same state; the loser gets
    :class:`IllegalTransition` (HTTP 409). ``fields`` are saved in the same UPDATE.
    """
    current = session.state
    if not can_transition(current, target):
        raise IllegalTransition(
            f"A session cannot go from {current} to {target}.",
            extra={"state": current, "target": target},
        )
    now = timezone.now()
    values: dict[str, Any] = {"state": target, "state_changed_at": now, "updated_at": now, **fields}
    if message is not None:
        values["status_message"] = message[:500]
    if target not in (S.RUNNING,):
        values.setdefault("streaming_ready", False)
    updated = Session.objects.filter(pk=session.pk, state=current).update(**values)
    if not updated:
        session.refresh_from_db(fields=["state"])
        raise IllegalTransition(
            f"The session changed state concurrently (now {session.state}).",
            extra={"state": session.state, "target": target},
        )
    for key, value in values.items():
        setattr(session, key, value)
    from sessions_app.notify import session_changed

    session_id, user_id = session.pk, session.user_id
    transaction.on_commit(lambda: session_changed(session_id, user_id, current, target, actor=actor))
    return session

"""What happens after a session changes state: one explicit place, called on commit.

- the portal gets the new session object over its per-user Channels group (live progress);
- the event bus gets ``session.*`` events for plugins and webhooks.

Callers on a latency-critical path (the agent hub applying an agent's frames) run their
work under :func:`deferred`: the fan-out is collected instead of run, and the caller hands
it to :func:`flush` off that path (the hub: a per-connection background queue, in order).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

T = TypeVar("T")
Change = tuple[Any, Any, str | None, str]
Batch = list[tuple[list[Change], Any]]
_local = threading.local()

# previous state -> new state -> event name (ARCHITECTURE §8)
_EVENTS = {
    ("pending", "running"): "session.started",
    ("starting", "running"): "session.started",
    ("waking", "running"): "session.woken",
}
_EVENTS_BY_TARGET = {"hibernated": "session.hibernated", "stopped": "session.stopped", "failed": "session.failed"}


def user_group(user_id: Any) -> str:
    """The Channels group of one user's browser sockets."""
    return f"user.{user_id}"


def event_for(previous: str, target: str) -> str | None:
    return _EVENTS.get((previous, target)) or _EVENTS_BY_TARGET.get(target)


def session_changed(session_id: Any, user_id: Any, previous: str | None, target: str, *, actor: Any = None) -> None:
    """Broadcast the session to its owner's sockets and emit the matching event.

    Failures here never undo the state change (it is committed); they are logged.
    """
    sessions_changed([(session_id, user_id, previous, target)], actor=actor)


def sessions_changed(changes: list[tuple[Any, Any, str | None, str]], *, actor: Any = None) -> None:
    """:func:`session_changed` for many ``(session_id, user_id, previous, target)`` at once.

    One query reads every session and one trip to the channel layer carries every broadcast;
    each session still gets its own broadcast and its own event. Sessions deleted meanwhile
    are skipped.
    """
    if not changes:
        return
    batch: Batch | None = getattr(_local, "batch", None)
    if batch is not None:
        batch.append((list(changes), actor))
        return
    _fan_out(changes, actor)


@contextlib.contextmanager
def deferred() -> Iterator[Batch]:
    """Collect the fan-outs of this thread's changes instead of running them (see module doc)."""
    outer = getattr(_local, "batch", None)
    _local.batch = batch = []
    try:
        yield batch
    finally:
        _local.batch = outer


def run_deferred(func: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, Batch]:
    """``func(*args, **kwargs)`` under :func:`deferred`: its result and the collected fan-out.

    If ``func`` raises, whatever it had committed before is fanned out at once.
    """
    with deferred() as batch:
        try:
            result = func(*args, **kwargs)
        except BaseException:
            flush(batch)
            raise
    return result, batch


def flush(batch: Batch) -> None:
    """Run a fan-out collected by :func:`deferred`, in order; consecutive changes by the same
    actor go out together (one query, one trip to the channel layer)."""
    merged: Batch = []
    for changes, actor in batch:
        if merged and merged[-1][1] is actor:
            merged[-1][0].extend(changes)
        else:
            merged.append((list(changes), actor))
    for changes, actor in merged:
        _fan_out(changes, actor)


def _fan_out(changes: list[Change], actor: Any) -> None:
    from sessions_app.api.representation import represent_many
    from sessions_app.models import Session
    from streamspace import events

    bodies = {body["id"]: body for body in represent_many(Session.objects.filter(pk__in=[c[0] for c in changes]))}
    changed = [(bodies[str(c[0])], *c[1:]) for c in changes if str(c[0]) in bodies]
    try:
        async_to_sync(_broadcast)([(user_id, body) for body, user_id, _, _ in changed])
    except Exception:
        log.exception("could not broadcast %d session change(s)", len(changed))
    for body, _, previous, target in changed:
        name = "session.created" if previous is None else event_for(previous, target)
        if name:
            events.emit(name, actor=actor, data={"session": body, "previous_state": previous})


async def _broadcast(updates: list[tuple[Any, dict[str, Any]]]) -> None:
    layer = get_channel_layer()
    for user_id, body in updates:
        try:
            await layer.group_send(user_group(user_id), {"type": "session.update", "session": body})
        except Exception:
            log.exception("could not broadcast session %s", body["id"])

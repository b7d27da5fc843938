"""What happens after a session changes state: one explicit place, called on commit.

- the portal gets the new session object over its per-user Channels group (live progress);
- the event bus gets ``session.*`` events for plugins and webhooks.

Both go through :func:`streamspace.fanout.announce`, so a caller on a latency-critical path
(the agent hub applying an agent's frames) can collect them and run them off that path.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from sessions_app.api.representation import represent_many
from sessions_app.models import Session
from streamspace import events, fanout

log = logging.getLogger(__name__)

Change = tuple[Any, Any, str | None, str]  # (session_id, user_id, previous state, new state)

# previous state -> new state -> event name (docs/architecture.md §12)
_EVENTS = {
    ("pending", "running"): "session.started",
    ("starting", "running"): "session.started",
    ("waking", "running"): "session.woken",
}
_EVENTS_BY_TARGET = {"hibernated": "session.hibernated", "stopped": "session.stopped", "failed": "session.failed"}


_known = threading.local()


@contextlib.contextmanager
def represented(bodies: list[dict[str, Any]]) -> Iterator[None]:
    """Announcements run in this block (on this thread) broadcast these session
    representations as they are instead of reading those sessions again: for a caller that
    has just represented the committed rows (the launch's response)."""
    outer = getattr(_known, "bodies", None)
    _known.bodies = {**(outer or {}), **{body["id"]: body for body in bodies}}
    try:
        yield
    finally:
        _known.bodies = outer


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
    if changes:
        fanout.announce(_fan_out, changes, actor)


def _fan_out(changes: list[Change], actor: Any) -> None:
    known = getattr(_known, "bodies", None) or {}
    bodies = {str(c[0]): known[str(c[0])] for c in changes if str(c[0]) in known}
    unread = [c[0] for c in changes if str(c[0]) not in bodies]
    if unread:
        bodies.update((body["id"], body) for body in represent_many(Session.objects.filter(pk__in=unread)))
    changed = [(bodies[str(c[0])], *c[1:]) for c in changes if str(c[0]) in bodies]
    # One broadcast per session: every body is the session as it is now (changes applied
    # together, e.g. an agent's burst of statuses, would otherwise send the same body again).
    latest = {body["id"]: (user_id, body) for body, user_id, _, _ in changed}
    try:
        async_to_sync(_broadcast)(list(latest.values()))
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

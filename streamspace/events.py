"""The event bus (docs/architecture.md §12): services emit, subscribers receive.

A subscriber receives ``{"event", "occurred_at", "actor", "data"}``. ``emit`` is called after
the change it reports has committed (callers use ``transaction.on_commit``), so a
subscriber never sees an event for a rolled-back change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.utils import timezone

log = logging.getLogger(__name__)

EVENTS = (
    "session.created",
    "session.started",
    "session.stopped",
    "session.hibernated",
    "session.woken",
    "session.failed",
    "user.login",
    "user.created",
    "agent.connected",
    "agent.disconnected",
    "agent.leader_changed",
    "quota.exceeded",
    "share.granted",
    "share.revoked",
    "share.used",
)

Subscriber = Callable[[dict[str, Any]], None]
_subscribers: list[Subscriber] = []


def subscribe(callback: Subscriber) -> Subscriber:
    """Register an in-process subscriber (usable as a decorator)."""
    _subscribers.append(callback)
    return callback


def unsubscribe(callback: Subscriber) -> None:
    if callback in _subscribers:
        _subscribers.remove(callback)


def _actor_repr(actor: Any) -> str | None:
    if actor is None:
        return None
    if hasattr(actor, "get_username"):
        return actor.get_username()
    return str(actor)


def emit(event: str, *, actor: Any = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Deliver ``event`` to every subscriber; one failing subscriber does not stop the others."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    envelope = {
        "event": event,
        "occurred_at": timezone.now().isoformat(),
        "actor": _actor_repr(actor),
        "data": data or {},
    }
    for subscriber in list(_subscribers):
        try:
            subscriber(envelope)
        except Exception:
            log.exception("event subscriber %r failed on %s", subscriber, event)
    return envelope

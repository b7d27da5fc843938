"""The event bus (docs/architecture.md §12): services emit, subscribers receive.

A subscriber receives ``{"event", "occurred_at", "actor", "data"}``. ``emit`` is called after
the change it reports has committed (callers use ``transaction.on_commit``), so a
subscriber never sees an event for a rolled-back change.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
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
_batch = threading.local()


@contextlib.contextmanager
def batch() -> Iterator[None]:
    """Events emitted together, in this thread (the hub's batched registrations): what the
    subscribers look up per event through :func:`shared` is looked up once for them all."""
    if getattr(_batch, "memo", None) is not None:  # nested: the outer batch's lookups serve
        yield
        return
    _batch.memo = {}
    try:
        yield
    finally:
        _batch.memo = None


def shared(key: str, load: Callable[[], Any]) -> Any:
    """``load()`` — once per :func:`batch` for each ``key`` inside one, every time outside.

    For a subscriber's per-event lookups that do not depend on the event (its cached
    subscriptions), so that a batch of events costs one lookup, not one per event.
    """
    memo = getattr(_batch, "memo", None)
    if memo is None:
        return load()
    if key not in memo:
        memo[key] = load()
    return memo[key]


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

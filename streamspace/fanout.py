"""Announcements of committed changes, run at once or collected for later.

A change (a session's new state, say) is announced after it commits: portal broadcasts,
event-bus events. On a latency-critical path (the agent hub applying an agent's frames) the
caller runs its work under :func:`deferred` or :func:`run_deferred`: announcements are
collected instead of run, and the caller hands the batch to :func:`flush` off that path.
The module knows nothing of what is announced, so any layer can defer another layer's
announcements without importing it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
Announce = Callable[[list[Any], Any], None]  # (items, actor)
Batch = list[tuple[Announce, list[Any], Any]]
_local = threading.local()


def announce(func: Announce, items: list[Any], actor: Any = None) -> None:
    """``func(items, actor)`` now, or collected if this thread is under :func:`deferred`."""
    batch: Batch | None = getattr(_local, "batch", None)
    if batch is not None:
        batch.append((func, list(items), actor))
        return
    func(list(items), actor)


@contextlib.contextmanager
def deferred() -> Iterator[Batch]:
    """Collect this thread's announcements instead of running them."""
    outer = getattr(_local, "batch", None)
    _local.batch = batch = []
    try:
        yield batch
    finally:
        _local.batch = outer


def run_deferred(func: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, Batch]:
    """``func(*args, **kwargs)`` under :func:`deferred`: its result and the collected batch.

    If ``func`` raises, whatever it had announced (its committed changes) is flushed at once.
    """
    with deferred() as batch:
        try:
            result = func(*args, **kwargs)
        except BaseException:
            flush(batch)
            raise
    return result, batch


def flush(batch: Batch) -> None:
    """Run a collected batch in order; consecutive announcements by the same function and
    actor are merged into one call, so their items cost one query and one broadcast trip."""
    merged: Batch = []
    for func, items, actor in batch:
        if merged and merged[-1][0] is func and merged[-1][2] is actor:
            merged[-1][1].extend(items)
        else:
            merged.append((func, list(items), actor))
    for func, items, actor in merged:
        func(items, actor)

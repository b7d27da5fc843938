"""Where the agent hub's database work runs (docs/architecture.md §7.1).

Channels runs every ``database_sync_to_async`` call of a process on one thread, so the
database work of all agent sockets on a replica happens one call at a time, each waiting
for its PostgreSQL round trips. When a replica dies, all of its agents register on the
others at once; one at a time, the last of them waits for all the others, past the
handshake and register timeouts. With ``AGENT_HUB_DB_THREADS`` > 0 (the default with
PostgreSQL) the hub's calls run on a pool of that many threads instead, each with its own
pooled connection, so their round trips overlap.

That is safe because a connection's frames are still applied one after the other (its
consumer awaits each call), and every function of :mod:`agents_app.hub.rows` already runs
concurrently with the same work on other replicas. SQLite (one writer) keeps the one thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

_executor: ThreadPoolExecutor | None = None


def executor() -> ThreadPoolExecutor | None:
    """The hub's thread pool (made on first use), or None for Channels' one database thread."""
    global _executor
    if not settings.AGENT_HUB_DB_THREADS:
        return None
    if _executor is None:
        _executor = ThreadPoolExecutor(settings.AGENT_HUB_DB_THREADS, thread_name_prefix="agent-hub-db")
    return _executor


def to_thread(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``func`` as a coroutine function run where the hub's database work runs; like
    ``database_sync_to_async``, it closes stale connections before and after."""
    pool = executor()
    if pool is None:
        return database_sync_to_async(func)
    return database_sync_to_async(func, thread_sensitive=False, executor=pool)

"""Registrations batched into one database call (docs/architecture.md §7.1).

When a control-plane replica dies, every agent on it connects to the others within the
first backoff window. Each connection's database work (its token, its ``register``, what
follows ``registered``) done call by call costs a thread hop and a dozen statements per
agent; the last of a thousand waits for all the others and drops at the handshake or
register timeout. A :class:`Batcher` takes everything queued while its previous call ran
and does it in one call, so the cost per agent falls as the herd grows, and a lone
connection waits for nothing (no timer: a call starts as soon as the previous one ends).

Each caller gets its own entry of the call's result; an entry that is an exception is
raised to that caller only.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from channels.db import database_sync_to_async

In = TypeVar("In")
Out = TypeVar("Out")

MAX_BATCH = 500  # one call's share: its statements' parameter lists stay moderate


class Batcher(Generic[In, Out]):
    """Runs ``func(items) -> results`` (same length and order; an entry may be an exception)
    for everything :meth:`submit` queued meanwhile: on Channels' database thread, or
    awaited on the loop when ``func`` is a coroutine function (Redis)."""

    def __init__(self, func: Callable[[list[In]], Any]) -> None:
        self.call = func if inspect.iscoroutinefunction(func) else database_sync_to_async(func)
        self.loop = asyncio.get_running_loop()
        self._queue: list[tuple[In, asyncio.Future]] = []
        self._running: asyncio.Task | None = None

    async def submit(self, item: In) -> Out:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._drain())
        result = await future
        if isinstance(result, BaseException):
            raise result
        return result

    async def _drain(self) -> None:
        while self._queue:
            taken, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                results = await self.call([item for item, _ in taken])
            except Exception as exc:  # the whole call failed: so did each of its items
                results = [exc] * len(taken)
            for (_, future), result in zip(taken, results, strict=True):
                if not future.done():  # its caller may have gone (socket closed)
                    future.set_result(result)


_batchers: dict[Callable, Batcher] = {}


def batcher(func: Callable[[list[Any]], list[Any]]) -> Batcher:
    """The batcher of ``func`` on the running event loop (a new loop, as in tests, gets its own)."""
    found = _batchers.get(func)
    if found is None or found.loop is not asyncio.get_running_loop():
        found = _batchers[func] = Batcher(func)
    return found

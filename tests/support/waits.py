"""Polling until a condition holds, for what a test cannot await as an event (another
process's state, rows another process writes).

``wait_until`` blocks the calling thread; ``until`` is its coroutine twin for async tests,
whose predicate may be a plain function or return an awaitable. Both return the first truthy
value and fail with what they waited for (and, for ``wait_until``, the tails of ``logs``)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def _tails(logs: Iterable[Path]) -> str:
    return "".join(f"\n--- {p}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "",
    *,
    logs: Iterable[Path] = (),
) -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or predicate}{_tails(logs)}")
        time.sleep(interval)


async def until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll ``predicate`` (awaiting its result when it is awaitable) until it is truthy
    (returned) or ``timeout`` seconds pass; the failure names the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or predicate} (last: {last!r})")
        await asyncio.sleep(interval)

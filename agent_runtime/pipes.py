"""Byte pipes shared by the agent's tunnel and the control plane's tunnel endpoint."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


async def until_first_done(*directions: Coroutine[Any, Any, None]) -> None:
    """Run the directions of a pipe until one of them ends, then cancel and reap the others.

    Errors of the directions are swallowed: when one side of a pipe ends, the pipe is over.
    """
    tasks = [asyncio.ensure_future(direction) for direction in directions]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

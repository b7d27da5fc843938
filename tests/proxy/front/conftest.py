"""Fixtures for the front's tests: a clock that is also the front's monotonic time, and connections."""

from __future__ import annotations

import asyncio
import time
import types
from typing import Any

import pytest
from twisted.internet.task import Clock

from streamspace.front import protocol as front
from tests.proxy.front.harness import (
    App,
    Conn,
    Handler,
    echo,
)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """A Twisted clock that is also the front's monotonic time (its idle timer reads both)."""
    clock = Clock()
    monkeypatch.setattr(front, "time", types.SimpleNamespace(monotonic=clock.seconds, time=time.time))
    return clock


@pytest.fixture
async def connect(clock):
    """``connect(handler or App, **options)``: a new connection; application tasks are cancelled after the test."""
    conns: list[Conn] = []

    def connect(app: App | Handler | None = None, **options: Any) -> Conn:
        if not isinstance(app, App):
            app = App(app or echo)
        conn = Conn(app, clock, **options)
        conns.append(conn)
        return conn

    yield connect
    tasks = [call.task for conn in conns for call in conn.app.calls if not call.task.done()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

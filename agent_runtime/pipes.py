"""Byte pipes shared by the agent's tunnel and the control plane's proxy (its WebSocket pipe and tunnel sockets)."""

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


class PipeEnd(asyncio.Protocol):
    """One end of a pipe (a socket); bytes go to ``peer``; ``owner.end_closed(end)`` when it ends.

    Back-pressure: when this end's write buffer passes ``HIGH_WATER`` the peer stops reading
    until it drains, so neither direction buffers without bound.
    """

    HIGH_WATER = 512 * 1024
    # An end that writes replies of its own to what it reads (a WebSocket end answers pings)
    # also stops reading itself while its writes are backed up: a peer that sends pings and
    # never reads must not make us queue pongs without bound.
    SELF_PACED = False

    def __init__(self, owner: Any, peer: PipeEnd | None = None) -> None:
        self.owner = owner
        self.transport: Any = None
        self.peer = peer  # set before the first byte can arrive, where the other end exists
        self.closed = False
        self._holds: set[str] = set()  # why reading is paused ("peer", "self"); read when empty

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=self.HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        self.peer.transport.write(data)  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        return False  # close: the other end is closed after its buffer drains

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.owner.end_closed(self)

    def hold(self, reason: str) -> None:
        """Stop reading for ``reason`` (reading resumes once every reason is released)."""
        if not self._holds and not self.closed:
            self.transport.pause_reading()
        self._holds.add(reason)

    def release(self, reason: str) -> None:
        if reason in self._holds:
            self._holds.discard(reason)
            if not self._holds and not self.closed:
                self.transport.resume_reading()

    # This end's writes are backed up: stop reading the other end until they drain.
    def pause_writing(self) -> None:
        peer = self.peer
        if peer is not None and not peer.closed:
            peer.hold("peer")
        if self.SELF_PACED:
            self.hold("self")

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None and not peer.closed:
            peer.release("peer")
        if self.SELF_PACED:
            self.release("self")

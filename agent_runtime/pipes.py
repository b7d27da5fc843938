"""Byte pipes shared by the agent's tunnel and the control plane's proxy (its WebSocket pipe and tunnel sockets)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from websockets.protocol import State


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

    def end(self) -> None:
        """Close once what was written is out."""
        self.transport.close()

    def end_peer(self) -> None:
        """This end is over: the other one ends too (if it is linked and still open)."""
        peer = self.peer
        if peer is not None and not peer.closed:
            peer.end()

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


class FramedEnd(PipeEnd):
    """A :class:`PipeEnd` that speaks WebSocket through ``ws`` (a ``websockets`` sans-I/O
    protocol): payloads of the frames it receives go to the peer's socket (held until the
    peer is linked), and what the peer sends goes out as binary frames.
    """

    SELF_PACED = True  # it answers pings

    def __init__(self, owner: Any, ws: Any, peer: PipeEnd | None = None) -> None:
        super().__init__(owner, peer)
        self.ws = ws
        self.held: list[bytes] = []  # payloads that came before the peer's socket was open

    def deliver(self, payload: bytes) -> None:
        peer = self.peer
        if peer is None:
            self.held.append(payload)
        elif not peer.closed:
            peer.transport.write(payload)

    def link(self, peer: PipeEnd) -> None:
        """The peer's socket is open: it gets what was held, and ends with us if we are gone."""
        self.peer = peer
        for payload in self.held:
            peer.transport.write(payload)
        self.held.clear()
        if self.closed:
            peer.transport.close()

    def send(self, payload: bytes) -> None:
        if self.ws.state is State.OPEN:
            self.ws.send_binary(payload)
            self.flush()

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame (if the WebSocket is still open), then close once it is written."""
        if self.ws.state is State.OPEN:
            self.ws.send_close(code, reason)
        self.flush()
        self.transport.close()

    def end(self) -> None:
        self.close(1000)

    def flush(self) -> None:
        """Write what the protocol has to say (frames, pongs, close); close once it expects to."""
        transport = self.transport
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
        if self.ws.close_expected() and not transport.is_closing():
            transport.close()


class RawEnd(PipeEnd):
    """A plain socket whose peer is a :class:`FramedEnd`: its bytes go out as binary frames."""

    def data_received(self, data: bytes) -> None:
        self.peer.send(data)  # type: ignore[union-attr]

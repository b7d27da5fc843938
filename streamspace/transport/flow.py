"""Back-pressure between the proxy and the browser's socket.

ASGI has no flow control for ``send``: daphne's ``send`` returns at once and Twisted keeps
whatever the client has not read yet in memory. With a slow browser and a fast session the
proxy would buffer without bound. From daphne's ``send`` we reach its protocol and
Twisted's HTTP channel (:mod:`.daphne_internals`) and register a streaming producer on it
(Twisted's public ``IConsumer`` API). Twisted then tells us when its buffer is over
``bufferSize`` (raised to ``OUTBOUND_BUFFER``) and when it drained, and the proxy stops
reading from the session in between.

The other way round, daphne puts every frame the browser sends into an unbounded queue;
when the proxy falls behind (the session reads slowly) we pause reading the browser's
socket until the queue has drained.

Requests served by the proxy's front (``streamspace.front``) carry their Twisted transport
on ``send``'s ``Exchange`` (``send.__self__.front_transport``): the producer is registered
on it directly. Under another ASGI server these hooks are absent and the classes do
nothing: servers that await the socket in ``send`` need no help.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from streamspace.transport.daphne_internals import (
    channel_waiting,
    client_transport,
    daphne_protocol,
    receive_queue,
    upgraded_channel,
)

log = logging.getLogger(__name__)

INBOUND_HIGH = 32  # queued browser messages before we stop reading the browser's socket
INBOUND_LOW = 4
# Bytes Twisted may hold for a slow client before the proxy stops reading the session
# (Twisted's default is 64 KiB: less than one large media frame, which would serialise them).
OUTBOUND_BUFFER = 512 * 1024


def _front_transport(send: Any) -> Any | None:
    """The client's Twisted transport when ``send`` is the front's ``Exchange.send``."""
    return getattr(getattr(send, "__self__", None), "front_transport", None)


class OutboundFlow:
    """A Twisted push producer registered on the client connection: ``await wait()`` before sending."""

    def __init__(self) -> None:
        self._writable = asyncio.Event()
        self._writable.set()
        self._consumer: Any = None
        self.stopped = False

    # -- IPushProducer (called by Twisted on the event loop thread) --
    def pauseProducing(self) -> None:
        self._writable.clear()

    def resumeProducing(self) -> None:
        self._writable.set()

    def stopProducing(self) -> None:
        self.stopped = True
        self._writable.set()

    @classmethod
    def attach(cls, send: Any, *, websocket: bool) -> OutboundFlow:
        flow = cls()
        transport = _front_transport(send)
        if transport is not None:
            try:
                if transport.bufferSize < OUTBOUND_BUFFER:
                    transport.bufferSize = OUTBOUND_BUFFER
                transport.registerProducer(flow, True)
                flow._consumer = transport
            except (AttributeError, RuntimeError):  # the connection is already gone
                log.debug("no back-pressure hook on %r", transport, exc_info=True)
            return flow
        protocol = daphne_protocol(send)
        if protocol is None:
            return flow
        try:
            transport = client_transport(protocol)
            if transport is not None and getattr(transport, "bufferSize", OUTBOUND_BUFFER) < OUTBOUND_BUFFER:
                transport.bufferSize = OUTBOUND_BUFFER
            if websocket:
                channel = upgraded_channel(protocol)
                if channel is None:
                    return flow
                channel.registerProducer(flow, True)
                flow._consumer = channel
            else:
                protocol.registerProducer(flow, True)
                flow._consumer = protocol
                channel = getattr(protocol, "channel", None)
            if channel_waiting(channel):  # a producer registered now would never be paused
                flow.pauseProducing()
        except (AttributeError, RuntimeError, ValueError):  # another producer, or an unknown server
            log.debug("no back-pressure hook on %r", protocol, exc_info=True)
            flow._consumer = None
        return flow

    async def wait(self) -> None:
        if not self._writable.is_set():
            await self._writable.wait()

    def detach(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.unregisterProducer()
            except Exception:  # the connection may already be gone
                log.debug("unregisterProducer failed", exc_info=True)


class InboundFlow:
    """Pauses reading the browser's socket while daphne's queue for this connection is long."""

    def __init__(self, send: Any, receive: Any) -> None:
        self._transport = getattr(daphne_protocol(send), "transport", None)
        self._queue = receive_queue(receive)
        self._paused = False

    def after_receive(self) -> None:
        if self._queue is None or self._transport is None:
            return
        size = self._queue.qsize()
        try:
            if not self._paused and size >= INBOUND_HIGH:
                self._transport.pauseProducing()
                self._paused = True
            elif self._paused and size <= INBOUND_LOW:
                self._transport.resumeProducing()
                self._paused = False
        except Exception:  # transport already closed
            self._transport = None

    def release(self) -> None:
        if self._paused and self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.resumeProducing()
        self._paused = False


def abort_connection(send: Any) -> bool:
    """Drop the client connection at once (a response cut short must not look complete)."""
    if _front_transport(send) is not None:
        send.__self__.abort()
        return True
    transport = client_transport(daphne_protocol(send))
    abort = getattr(transport, "abortConnection", None)
    if abort is None:
        return False
    try:
        abort()
    except Exception:
        return False
    return True

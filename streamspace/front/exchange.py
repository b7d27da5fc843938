"""One HTTP request and its response on the proxy's front: the ASGI side.

:class:`Exchange` is the front's handler (:class:`~streamspace.front.handlers.FrontHandler`)
for a plain HTTP request, and the application's ``receive`` and ``send`` for it: the
request body as ``http.request`` messages (the socket pauses while more than
``BODY_HIGH`` bytes wait for the application), then ``http.disconnect``; the response head
written with the first body bytes (``content-length`` added for a one-piece body, chunked
framing for a streamed one without a length, as daphne does), ``Server`` as daphne sets
it, the access log line as daphne writes it. An application that fails before its response
gets daphne's 500 page; one that fails during it has its connection dropped, so a cut-off
body never looks complete. ``front_transport`` and :meth:`Exchange.abort` are what
:mod:`streamspace.transport.flow` uses for back-pressure and aborts.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import TYPE_CHECKING, Any

from twisted.web.http import RESPONSES

from streamspace.transport.access_log import client_text
from streamspace.transport.daphne_internals import HEADER_NAME_RE

if TYPE_CHECKING:
    from streamspace.front.handlers import FrontConnection, RequestHead

log = logging.getLogger(__name__)

BODY_HIGH = 256 * 1024  # request body bytes queued for the application before reading pauses
_NO_BODY_STATUS = frozenset({204, 304})


class Exchange:
    """One request and its response: the ASGI ``receive`` and ``send`` of the application."""

    __slots__ = (
        "front",
        "front_transport",
        "scope",
        "method",
        "target",
        "body_left",
        "close",
        "task",
        "_chunks",
        "_queued",
        "_waiter",
        "_body_given",
        "_gone",
        "_status",
        "_headers",
        "_started",
        "_written",
        "_chunked",
        "_no_body",
        "finished",
        "sent",
        "_begun",
        "client",
    )

    def __init__(self, front: FrontConnection, head: RequestHead) -> None:
        self.front = front
        self.front_transport = front.transport
        self.scope = head.scope
        self.client = head.scope["client"]  # as the application saw it (``--proxy-headers``): the access log's
        self.method = head.method
        self.target = head.target
        self.body_left = head.body_length
        self.close = head.close
        self.task: asyncio.Task | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._waiter: asyncio.Future | None = None
        self._body_given = False  # the last http.request message was returned
        self._gone = False
        self._status = 0
        self._headers: Any = ()
        self._started = False
        self._written = False
        self._chunked = False
        self._no_body = self.method == b"HEAD"
        self.finished = False
        self.sent = 0
        self._begun = time.time()

    def start(self) -> None:
        """Run the application for this request."""
        front = self.front
        self.task = task = front.factory.loop.create_task(
            front.server.application(scope=self.scope, receive=self.receive, send=self.send)
        )
        task.add_done_callback(self.application_done)

    # -- request body, from the front --
    def feed(self, data: bytes) -> bytes:
        """Take this request's body bytes out of ``data``; return what is left (the next request)."""
        left = self.body_left
        if len(data) > left:
            data, rest = data[:left], data[left:]
        else:
            rest = b""
        self.body_left = left - len(data)
        self._chunks.append(data)
        self._queued += len(data)
        if self._queued > BODY_HIGH and not self.front.paused:
            self.front.paused = True
            self.front_transport.pauseProducing()
        self._wake()
        return rest

    def _done(self) -> None:
        """The response is out: the application's next ``receive`` is ``http.disconnect`` (as daphne's)."""
        self._gone = True
        self._wake()
        self.front.factory.loop.call_soon(self._linger)  # by then the application has usually returned
        # Asked to close, or the application answered before the body was all in: the connection ends.
        self.front.request_done(self, keep_alive=not (self.close or self.body_left))

    def disconnected(self) -> None:
        if self._gone:
            return
        self._gone = True
        self._wake()
        self._linger()

    def _linger(self) -> None:
        task = self.task
        if task is not None and not task.done():
            # What daphne does with an application still running after its client left.
            self.front.factory.reactor.callLater(self.front.server.application_close_timeout, task.cancel)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- ASGI --
    async def receive(self) -> dict:
        while True:
            if self._chunks and not self._gone:
                chunks = self._chunks
                body = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._queued = 0
                front = self.front
                if front.paused and front.handler is self and not front.lost:
                    front.paused = False
                    self.front_transport.resumeProducing()
                more = self.body_left > 0
                self._body_given = not more
                return {"type": "http.request", "body": body, "more_body": more}
            if not self._body_given and not self.body_left and not self._gone:
                self._body_given = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self._gone:
                return {"type": "http.disconnect"}
            self._waiter = self.front.factory.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self._started:
                raise ValueError("HTTP response has already been started")
            self._status = message["status"]
            self._headers = message.get("headers", ())
            self._started = True
            return
        if kind != "http.response.body":
            raise ValueError(f"Cannot handle message type {kind}!")
        if not self._started:
            raise ValueError(f"HTTP response has not yet been started but got {kind}")
        if self.finished:
            return
        body = message.get("body", b"")
        if not isinstance(body, bytes):
            raise TypeError(f"http.response.body's body must be bytes, not {type(body).__name__}")
        more = message.get("more_body", False)
        transport = self.front_transport
        out: list[bytes] = []
        if not self._written:
            out.append(self._head(len(body), more))
            self._written = True
        if body and not self._no_body:
            self.sent += len(body)
            if self._chunked:
                out.append(b"%x\r\n" % len(body))
                out.append(body)
                out.append(b"\r\n")
            else:
                out.append(body)
        if not more:
            if self._chunked:
                out.append(b"0\r\n\r\n")
            self.finished = True
        if not self.front.lost:
            if len(out) == 1:
                transport.write(out[0])
            else:
                transport.writeSequence(out)
        if not more:
            self._log()
            self._done()

    def _head(self, first: int, more: bool) -> bytes:
        status = self._status
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, RESPONSES.get(status, b"Unknown Status"))]
        has_length = has_server = False
        for name, value in self._headers:
            if not isinstance(name, bytes) or not isinstance(value, bytes):
                raise ValueError("header names and values must be bytes")
            if HEADER_NAME_RE.fullmatch(name) is None:
                raise ValueError(f"invalid header name {name!r}")
            lowered = name.lower()
            if lowered == b"content-length":
                has_length = True
            elif lowered == b"server":
                has_server = True
            if b"\n" in value or b"\r" in value:  # as Twisted does: no header splitting
                value = value.replace(b"\r", b" ").replace(b"\n", b" ")
            lines.append(name + b": " + value + b"\r\n")
        if status in _NO_BODY_STATUS or status < 200:
            self._no_body = True
        elif not has_length and not self._no_body:
            if more:
                self._chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                lines.append(b"content-length: %d\r\n" % first)
        server_name = self.front.server.server_name
        if server_name and not has_server:
            lines.append(b"server: " + server_name.encode() + b"\r\n")
        if self.close or self.body_left:
            self.close = True  # said so: the connection ends with this response
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def _log(self) -> None:
        front = self.front
        try:
            front.server.log_action(
                "http",
                "complete",
                {
                    "path": self.target.decode("ascii"),
                    "status": self._status,
                    "method": self.method.decode("ascii", "replace"),
                    "client": client_text(self.client),
                    "time_taken": time.time() - self._begun,
                    "size": self.sent,
                },
            )
        except Exception:
            log.exception("access log failed")

    def abort(self) -> None:
        """Drop the connection now (a response cut short must not look complete)."""
        self.finished = True
        self.close = True  # no pipelined request runs on a dropped connection
        self.front.abort()

    def application_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            error: BaseException | None = None
        else:
            error = task.exception()
        if error is not None:
            log.error("Exception inside application: %s", error, exc_info=error)
        if self.finished or self.front.lost:
            if not self.finished:
                self.finished = True
                self._done()
            return
        if self._written:
            self.abort()
            self._done()
            return
        # Like daphne: an application that ended (or failed) without a response gets a 500.
        body = b"<html><head><title>500 Internal Server Error</title></head><body><h1>500 Internal Server Error</h1>Exception inside application.</body></html>"
        self._status, self._headers, self._started = 500, [(b"content-type", b"text/html; charset=utf-8")], True
        self.close = True
        self._no_body = False
        self.front_transport.write(self._head(len(body), False) + body)
        self.finished = True
        self.sent = len(body)
        self._log()
        self._done()

"""HTTP/1.1 to sessions: keep-alive connection pools and streamed bodies, parsed by llhttp.

The proxy needs only a small part of an HTTP client: write a request head and a streamed
body, parse the response (``httptools``, the llhttp binding under uvicorn), hand the body
on under back-pressure, and keep the connection for the next request. Doing only that
spares every proxied request the work a general-purpose client does per request and per
read (aiohttp's ``ClientSession``: cookie jar, tracing, URL objects, timers), which is a
large part of the proxy's CPU (bench/RESULTS.md, "Proxy").

Errors: :class:`ConnectFailed` (nothing was sent: the caller may try another route),
:class:`UpstreamTimeout` (no byte from the session for ``read_timeout`` seconds while one
was expected), :class:`UpstreamClosed` (the connection ended or the response was not HTTP).
An exception raised by the request body's iterator (the browser went away, its body
stalled) propagates unchanged out of :meth:`Pool.request`.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any

import httptools

HIGH_WATER = 256 * 1024  # response bytes held before we stop reading the session's socket
KEEPALIVE_S = 30.0  # an idle pooled connection older than this is closed, not reused
MAX_IDLE_PER_KEY = 64
# Methods whose request has no content by definition or by custom: an empty body is sent
# without a Content-Length (RFC 9110 section 8.6), every other method's empty body with
# ``content-length: 0``, so the session's server never waits for a body that is not coming.
METHODS_WITHOUT_BODY = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"TRACE"})

Headers = list[tuple[bytes, bytes]]
Body = bytes | AsyncIterable[bytes] | None
Opener = Callable[[Callable[[], asyncio.Protocol]], Awaitable[tuple[Any, Any]]]


class UpstreamError(Exception):
    """The exchange with the session failed."""


class ConnectFailed(UpstreamError):
    """No connection to the session; no byte of the request was sent."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class UpstreamTimeout(UpstreamError):
    """The session sent nothing for ``read_timeout`` seconds while a response was due."""


class UpstreamClosed(UpstreamError):
    """The connection ended before the response did, or the response was not valid HTTP."""


class _Stale(UpstreamClosed):
    """A pooled connection closed before any byte of the response (replayable requests retry)."""


class Response:
    """One response: ``status``, raw ``headers``, and its body through :meth:`read`."""

    __slots__ = (
        "status",
        "headers",
        "content_length",
        "_conn",
        "_head",
        "_head_only",
        "_chunks",
        "_buffered",
        "_waiter",
        "_complete",
        "_until_close",
        "_error",
        "_reusable",
        "_body_task",
    )

    def __init__(self, conn: _Connection, head_only: bool) -> None:
        self.status = 0
        self.headers: Headers = []
        self.content_length: int | None = None
        self._conn = conn
        self._head: asyncio.Future[None] = conn.loop.create_future()
        self._head_only = head_only
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._until_close = False  # neither Content-Length nor chunked: the body ends at EOF
        self._error: BaseException | None = None
        self._reusable = False
        self._body_task: asyncio.Task | None = None

    def _take(self) -> bytes:
        """Everything buffered, as one piece; reading from the session resumes."""
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        self._conn.resume_reading()
        return data

    async def read(self) -> bytes:
        """The next piece of the body (everything buffered so far); ``b""`` once it is complete."""
        while True:
            if self._chunks:
                return self._take()
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def read_all(self) -> bytes:
        """The whole body (only for responses known to be small)."""
        if self._complete and self._error is None:  # usually all there with the head
            return self._take()
        parts = []
        while data := await self.read():
            parts.append(data)
        return b"".join(parts)

    def release(self) -> None:
        """Done with the response: its connection goes back to the pool if it can be reused."""
        conn = self._conn
        body_task = self._body_task
        if body_task is not None and not body_task.done():
            body_task.cancel()
            self._reusable = False
        if self._complete and self._reusable and self._error is None and not conn.closed:
            conn.pool.put_back(conn)
        else:
            conn.abort()

    def close(self) -> None:
        """Abandon the response (the browser left): the connection is dropped."""
        self._reusable = False
        if not self._complete and self._error is None:
            self._error = UpstreamClosed("the response was abandoned")
            self._wake()
        self._conn.abort()

    # -- called by the connection --
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if not self._head.done():
            self._head.set_exception(exc)
            self._head.exception()  # retrieved here: nobody may be awaiting it any more
        elif not self._complete and self._error is None:
            self._error = exc
        self._wake()


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a session; at most one request at a time."""

    def __init__(self, pool: Pool, key: tuple, read_timeout: float) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.read_timeout = read_timeout
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._aborted = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._response: Response | None = None
        self._received = False  # a byte of the current response arrived
        self._headers: Headers = []
        self._informational = False
        self._read_paused = False
        self._body_pending = False  # the request body is still being sent
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._last = 0.0  # when the wait for the session's next byte started
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None or response._complete:  # bytes nobody asked for
            self.abort()
            return
        self._received = True
        self._last = self.loop.time()
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:  # 101 was never asked for
            response._fail(UpstreamClosed(f"invalid HTTP from the session: {exc}"))
            self.abort()

    def eof_received(self) -> None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        response = self._response
        if response is None or response._complete:
            return
        if response._head.done() and response._until_close and exc is None and not self._aborted:
            response._complete = True  # the body ran until EOF, as announced
            response._wake()
        elif not self._received:
            response._fail(_Stale("the session closed the connection"))
        else:
            response._fail(UpstreamClosed("the session closed the connection mid-response"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks --
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self._response
        assert response is not None
        if response._head.done():  # a second response to one request
            raise UpstreamClosed("the session sent an unrequested response")
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue, 103 Early Hints: the real answer follows
            self._informational = True
            self._headers = []
            return
        response.status = status
        response.headers = self._headers
        self._headers = []
        chunked = False
        for name, value in response.headers:
            lname = name.lower()
            if lname == b"content-length":
                response.content_length = int(value)  # llhttp already refused a malformed one
            elif lname == b"transfer-encoding":
                chunked = chunked or b"chunked" in value.lower()
        no_body = status in (204, 304) or response._head_only
        response._until_close = not no_body and response.content_length is None and not chunked
        if response._head_only:  # llhttp cannot be told a HEAD response has no body
            response._complete = True
        response._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        response = self._response
        assert response is not None
        if response._complete:
            return
        response._chunks.append(body)
        response._buffered += len(body)
        if response._buffered >= HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        response._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        response = self._response
        assert response is not None
        if response._head_only:
            return
        response._complete = True
        response._reusable = self._parser.should_keep_alive() and not self._body_pending
        response._wake()

    # -- used by Response and Pool --
    def resume_reading(self) -> None:
        if self._read_paused and not self.closed and self.transport is not None:
            self._read_paused = False
            self._last = self.loop.time()
            self.transport.resume_reading()

    def abort(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.abort()
        self.closed = self._aborted = True

    def _arm(self) -> None:
        self._last = self.loop.time()
        if self._timer is None:
            self._timer = self.loop.call_at(self._last + self.read_timeout, self._check_timeout)

    def _check_timeout(self) -> None:
        self._timer = None
        response = self._response
        if response is None or response._complete or response._error is not None or self.closed:
            return
        now = self.loop.time()
        if self._read_paused or self._body_pending:  # waiting for the browser, not the session
            self._timer = self.loop.call_at(now + self.read_timeout, self._check_timeout)
            return
        if now - self._last < self.read_timeout:
            self._timer = self.loop.call_at(self._last + self.read_timeout, self._check_timeout)
            return
        response._fail(UpstreamTimeout("the session did not answer in time"))
        self.abort()

    async def send(self, method: bytes, target: bytes, headers: Headers, body: Body, head_only: bool) -> Response:
        assert self.transport is not None
        response = Response(self, head_only)
        self._response = response
        self._received = False
        self._headers = []
        self._informational = False
        parts = [method, b" ", target, b" HTTP/1.1\r\n"]
        has_length = False
        for name, value in headers:
            if name == b"content-length":
                has_length = True
            parts += (name, b": ", value, b"\r\n")
        streaming = body is not None and not isinstance(body, bytes)
        if isinstance(body, bytes) and not has_length and (body or method not in METHODS_WITHOUT_BODY):
            parts.append(b"content-length: %d\r\n" % len(body))
        elif streaming and not has_length:
            parts.append(b"transfer-encoding: chunked\r\n")
        parts.append(b"\r\n")
        if isinstance(body, bytes):
            parts.append(body)
        self.transport.write(b"".join(parts))
        if streaming:
            self._body_pending = True
            response._body_task = self.loop.create_task(self._send_body(response, body, chunked=not has_length))
        self._arm()
        try:
            await response._head
        except BaseException:
            response.close()
            raise
        return response

    async def _send_body(self, response: Response, body: AsyncIterable[bytes], *, chunked: bool) -> None:
        write = self.transport.write  # type: ignore[union-attr]
        try:
            async for chunk in body:
                if self.closed:
                    return
                if chunked:
                    write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                else:
                    write(chunk)
                if self._write_paused:
                    self._drain = self.loop.create_future()
                    await self._drain
            if chunked and not self.closed:
                write(b"0\r\n\r\n")
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the browser's body failed: so does the request
            # Before the answer, the caller sees why (browser gone, body too slow); after, the
            # response is cut short.
            response._fail(exc if not response._head.done() else UpstreamClosed("the request body failed"))
            self.abort()
            return
        self._body_pending = False
        self._last = self.loop.time()


class Pool:
    """Keep-alive connections to sessions, by key (one pool per event loop)."""

    def __init__(self) -> None:
        self._idle: dict[tuple, list[_Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    async def request(
        self,
        key: tuple,
        opener: Opener,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: Body = None,
        *,
        read_timeout: float,
    ) -> Response:
        """Send a request over a pooled (or new) connection; the response once its head arrived.

        ``target`` and ``headers`` must already be valid on the wire (the proxy's path and
        header checks guarantee it); ``content-length`` or chunked framing is added for
        the body when the headers carry none.
        """
        head_only = method == b"HEAD"
        conn = self._checkout(key)
        if conn is not None:
            try:
                return await conn.send(method, target, headers, body, head_only)
            except _Stale:
                if body is not None and not isinstance(body, bytes):
                    raise UpstreamClosed("the session closed a kept-alive connection") from None
                # A pooled connection the session had closed meanwhile: replay on a new one.
        conn = await self._connect(key, opener, read_timeout)
        try:
            return await conn.send(method, target, headers, body, head_only)
        except _Stale as exc:
            raise UpstreamClosed(str(exc)) from None

    async def _connect(self, key: tuple, opener: Opener, read_timeout: float) -> _Connection:
        try:
            _, conn = await opener(lambda: _Connection(self, key, read_timeout))
        except ConnectFailed:
            raise
        except TimeoutError:
            raise ConnectFailed("connecting to the session timed out", timeout=True) from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to the session: {exc}") from exc
        return conn

    def _checkout(self, key: tuple) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        oldest = asyncio.get_running_loop().time() - KEEPALIVE_S
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since > oldest:
                return conn
            conn.abort()
        return None

    def put_back(self, conn: _Connection) -> None:
        conn._response = None
        idle = self._idle.setdefault(conn.key, [])
        if self.closed or len(idle) >= MAX_IDLE_PER_KEY:
            conn.abort()
            return
        conn.idle_since = conn.loop.time()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_later(KEEPALIVE_S, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        loop = asyncio.get_running_loop()
        oldest = loop.time() - KEEPALIVE_S
        for key, idle in list(self._idle.items()):
            keep = [conn for conn in idle if not conn.closed and conn.idle_since > oldest]
            for conn in idle:
                if conn not in keep:
                    conn.abort()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle:
            self._sweeper = loop.call_later(KEEPALIVE_S, self._sweep)

    def close(self) -> None:
        """Close every idle connection (in-flight ones close when released)."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()

"""WebSockets through the front as a byte pipe, as nginx and JupyterHub's proxy do.

:class:`WebSocketPipe` is the front's handler
(:class:`~streamspace.front.handlers.FrontHandler`) for a WebSocket handshake under the
proxy's prefix.

The browser's handshake is authorized like every proxy request, rewritten (the platform's
cookies and credentials removed, ``X-Forwarded-*`` set, ``Origin`` dropped) and sent to the
session. Once the session answers ``101``, its answer goes back to the browser and from
then on both directions carry the WebSocket protocol unchanged: frames, masks, fragments,
pings, close codes, subprotocols and any extension the two ends negotiate are theirs. The
control plane only moves bytes, so a 64 KiB media frame costs two socket writes instead
of being parsed, unmasked, queued as an ASGI message and framed again.

Once open, the browser's socket leaves Twisted: its file descriptor is duplicated into an
asyncio transport (uvloop under the launcher), Twisted's copy is closed without a FIN, and
both ends of the pipe are plain asyncio protocols writing straight to each other's
transports (no writer registration and extra loop turn per write, as Twisted needs).
Back-pressure both ways: an end whose write buffer passes ``PipeEnd.HIGH_WATER`` stops the
other end's reading until it drains. An open pipe keeps the session's ``last_activity``
fresh.

A piped WebSocket is the browser's and the session's: daphne does not ping it and its
``--websocket_timeout`` does not end it (both ends keep their own heartbeats, as they do
behind nginx), and ``STREAMSPACE_PROXY_WS_MAX_MESSAGE`` applies only where daphne ends the
WebSocket.

Only the path every viewer takes is short-cut: a cross-site ``Origin``, a request the
proxy would refuse, a session that is not running, a session that cannot be reached or
that does not answer ``101`` are **handed to daphne** before a byte is written to the
browser, and the ASGI proxy (:mod:`sessions_app.proxy.websocket`) answers them (403
before accept, 4013 "try again later" while waking, ...). So is a handshake over TLS
terminated by daphne itself, or on a connection with response bytes still unsent (the
socket cannot leave Twisted then). The session's answer is parsed by llhttp; an answer it
refuses is not piped.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

from django.conf import settings
from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from agent_runtime.pipes import PipeEnd
from agents_app.tunnels import TunnelUnavailable
from sessions_app.proxy import activity, auth, origin_allowed, upstream
from sessions_app.proxy.client import ConnectFailed
from sessions_app.proxy.paths import BadPath, parse
from sessions_app.proxy.rewrite import request_headers, response_headers
from streamspace.transport.access_log import log_websocket
from streamspace.transport.daphne_internals import detach, detachable

if TYPE_CHECKING:
    from streamspace.front.handlers import FrontConnection, RequestHead

log = logging.getLogger(__name__)

MAX_RESPONSE_HEAD = 64 * 1024
_UPGRADE = [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")]


class _NotPiped(Exception):
    """daphne's ASGI path answers this one."""


class _Session(PipeEnd):
    """The session's end: its handshake answer first, then bytes for the browser."""

    def __init__(self, pipe: WebSocketPipe) -> None:
        super().__init__(pipe)
        self.head = bytearray()
        self.answered: asyncio.Future[tuple[bytes, bytes]] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            super().data_received(data)
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_RESPONSE_HEAD:
                self._fail("the session's handshake answer is too long")
            return
        if not self.answered.done():
            self.transport.pause_reading()  # until the browser's end is there
            self.answered.set_result((bytes(self.head[: end + 4]), bytes(self.head[end + 4 :])))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answered.done():
            self._fail("the session closed the connection during the handshake")
        super().connection_lost(exc)

    def _fail(self, reason: str) -> None:
        if not self.answered.done():
            self.answered.set_exception(_NotPiped(reason))
        if self.transport is not None:
            self.transport.abort()


class WebSocketPipe:
    """One browser WebSocket piped to its session (the front's ``exchange`` during the handshake)."""

    def __init__(self, front: FrontConnection, head: RequestHead) -> None:
        self.front = front
        self.scope = head.scope
        self.raw_head = head.raw  # what daphne gets if the pipe is not for this request
        self.session: _Session | None = None
        self.browser: PipeEnd | None = None
        self.keep_alive: asyncio.Task | None = None
        self.task: asyncio.Task | None = None
        self.body_left = 0  # the front's view while the handshake is under way
        self.finished = False
        self.detached: socket.socket | None = None  # the browser's socket, once out of Twisted

    def start(self) -> None:
        """Try the handshake with the session (``run``)."""
        self.task = self.front.factory.loop.create_task(self.run())

    def feed(self, data: bytes) -> bytes:
        """A handshake has no body: every byte after its head is the WebSocket's (never called)."""
        return data

    def disconnected(self) -> None:
        """The browser left during the handshake: ``run`` stops at its next step."""
        self._close_session()

    async def run(self) -> None:
        try:
            await self._open()
        except _NotPiped as exc:
            log.debug("websocket %s goes to daphne: %s", self.scope["path"], exc)
            self._give_up()
        except Exception:
            log.exception("websocket pipe for %s failed", self.scope["path"])
            self._give_up()

    def _give_up(self) -> None:
        self._close_session()
        if self.detached is not None:  # too late for daphne: the browser's connection ends
            if self.browser is None:
                self.detached.close()
            return
        if not self.front.lost:
            self.front.hand_over(prefix=self.raw_head)

    async def _open(self) -> None:
        scope = self.scope
        if not detachable(self.front.transport):
            raise _NotPiped("the socket cannot leave Twisted (TLS, or response bytes unsent)")
        if not origin_allowed(scope):
            raise _NotPiped("cross-site Origin")
        try:
            path = parse(scope)
        except BadPath as exc:
            raise _NotPiped(exc.code) from None
        decision = auth.cached_decision(scope, path) or await auth.authorize(scope, path)
        target = decision.target
        if decision.status != 200 or target is None or not target.ready or path.is_status or path.needs_slash:
            raise _NotPiped("refused, or the session is not running")
        client_ip = (scope.get("client") or ("", 0))[0] or ""
        headers, _ = request_headers(
            [(name, value) for name, value in scope["headers"] if name != b"origin"],
            client_ip=client_ip,
            scheme=scope["scheme"],
            prefix=path.prefix,
            authorization=target.upstream_authorization,
        )
        try:
            routes = upstream.routes_for(target)
        except upstream.NoRoute as exc:
            raise _NotPiped(str(exc)) from None
        loop = asyncio.get_running_loop()
        for route in routes:
            try:
                _, session = await upstream.connect(route, lambda: _Session(self))
            except (OSError, TimeoutError, ConnectFailed, TunnelUnavailable) as exc:
                if route.kind == "direct" and not isinstance(exc, TimeoutError):
                    upstream.direct_failed(target)
                continue
            break
        else:
            raise _NotPiped("no route answered")
        self.session = session
        if self.front.lost:
            raise _NotPiped("the browser left")
        head = [b"GET " + path.upstream_target_bytes() + b" HTTP/1.1\r\nhost: " + route.host_header_bytes + b"\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in [*headers, *_UPGRADE]]
        session.transport.write(b"".join(head) + b"\r\n")
        try:
            answer, early = await asyncio.wait_for(session.answered, settings.STREAMSPACE_PROXY_CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise _NotPiped("the session did not answer the handshake in time") from None
        answer_headers = switching_headers(answer)
        if self.front.lost:
            raise _NotPiped("the browser left")
        out = response_headers(answer_headers, prefix=path.prefix, upstream_hosts=route.location_hosts)
        lines = [b"HTTP/1.1 101 Switching Protocols\r\n"]
        lines += [name + b": " + value + b"\r\n" for name, value in [*out, *_UPGRADE]]
        lines.append(b"\r\n")
        # From here on the connection is the pipe's: nothing can be handed to daphne any more.
        front = self.front
        early_from_browser = front.become(self)
        self.detached = detach(front.transport)
        if early_from_browser:  # ahead of anything the new transport reads from the kernel
            session.transport.write(early_from_browser)
        _, browser = await loop.connect_accepted_socket(lambda: PipeEnd(self, session), sock=self.detached)
        self.browser = browser
        session.peer = browser
        if browser.closed:  # the browser left during the await
            self._close_session()
            return
        browser.transport.writelines([*lines, early] if early else lines)
        session.transport.resume_reading()
        self.keep_alive = loop.create_task(activity.keep_alive(target.session_id))
        log_websocket(front.server, scope, "connected")

    def end_closed(self, end: PipeEnd) -> None:
        """One end hung up: the other is closed once what it was sent is out."""
        end.end_peer()
        if self.browser is not None and not self.finished:
            self.finished = True
            if self.keep_alive is not None:
                self.keep_alive.cancel()
            log_websocket(self.front.server, self.scope, "disconnected")

    def _close_session(self) -> None:
        session = self.session
        if session is not None and session.transport is not None and not session.closed:
            session.transport.close()


class _Answer:
    """llhttp's callbacks for the session's answer to the handshake."""

    __slots__ = ("headers",)

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value.strip(b" \t")))


def switching_headers(head: bytes) -> list[tuple[bytes, bytes]]:
    """The headers of the session's answer ``head`` (through its blank line) if it is a 101; else ``_NotPiped``."""
    answer = _Answer()
    parser = HttpResponseParser(answer)
    try:
        parser.feed_data(head)
    except HttpParserUpgrade:
        pass  # a 101 with Upgrade: what follows is the WebSocket's
    except HttpParserError as exc:
        raise _NotPiped(f"malformed handshake answer: {exc}") from None
    status = parser.get_status_code()
    if status != 101:
        raise _NotPiped(f"the session answered {status}")
    return answer.headers

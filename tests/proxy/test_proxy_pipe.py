"""WebSockets piped as bytes by the launcher's front (``streamspace/front/pipe.py``), end to end.

A real ``python -m streamspace.serve`` process and the real upstream process
(``upstream_server.py``, aiohttp). A piped handshake is recognisable by the session's own
``Server`` header (aiohttp) in the ``101``. Raw-socket tests frame by hand (RFC 6455).
What the pipe leaves to daphne (refusals, a session that is not running, a non-``101``
answer) must still get the ASGI proxy's answers.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from sessions_app.models import Session, SessionState
from tests.proxy.conftest import (
    assert_echoes_text_and_binary,
    bearer,
    cookie_header,
    make_session,
    status_of,
    ws_url,
)
from tests.support.processes import start_daphne, stop
from tests.support.waits import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY = 0x1, 0x2


# -- RFC 6455 on a raw socket --


def accept_for(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def frame(payload: bytes | str, opcode: int | None = None, *, mask: bool = True) -> bytes:
    """One final frame; masked (a client's) unless ``mask=False`` (a server's)."""
    if isinstance(payload, str):
        payload, opcode = payload.encode(), opcode or TEXT
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head = bytes([0x80 | (opcode or BINARY), bit | n])
    elif n < 65536:
        head = bytes([0x80 | (opcode or BINARY), bit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | (opcode or BINARY), bit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes((key * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
    return head + key + masked


def handshake(session, user, path: str = "/ws") -> tuple[bytes, bytes]:
    """A client's handshake bytes (the prefix takes a bearer, no cookie) and its Sec-WebSocket-Key."""
    key = base64.b64encode(os.urandom(16))
    head = (
        f"GET /api/v1/http/{session.pk}{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: {bearer(user)}\r\n\r\n"
    )
    return head.encode(), key


class Raw:
    """A client socket read through a buffered file: response heads and server frames."""

    def __init__(self, port: int, *, rcvbuf: int | None = None, timeout: float = 10.0) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()
        self.sock.close()

    def read(self, n: int) -> bytes:
        data = self.file.read(n)
        if len(data) < n:
            raise EOFError(f"connection closed after {len(data)} of {n} bytes")
        return data

    def head(self) -> tuple[int, dict[str, str]]:
        status = status_of(self.file.readline())
        headers = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def opened(self, key: bytes) -> dict[str, str]:
        """Read the 101; it must be the session's (aiohttp), i.e. piped."""
        status, headers = self.head()
        assert status == 101, headers
        assert headers["sec-websocket-accept"] == accept_for(key).decode()
        assert "aiohttp" in headers.get("server", ""), headers
        return headers

    def frame(self) -> tuple[int, bytes]:
        first, second = self.read(2)
        assert first & 0x80 and not second & 0x80, "server frames are final and unmasked here"
        n = second & 0x7F
        if n >= 126:
            n = int.from_bytes(self.read(2 if n == 126 else 8), "big")
        return first & 0x0F, self.read(n)


@contextlib.contextmanager
def raw_ws(daphne, session, user, **options) -> Iterator[Raw]:
    """A piped WebSocket on a raw socket, open."""
    data, key = handshake(session, user)
    with Raw(daphne.port, **options) as raw:
        raw.sock.sendall(data)
        raw.opened(key)
        yield raw


def viewer_ws(daphne, session, user, **options):
    return ws_connect(
        ws_url(daphne, session), additional_headers={"Authorization": bearer(user)}, open_timeout=10, **options
    )


def assert_piped_echo(daphne, session, user) -> None:
    with viewer_ws(daphne, session, user) as ws:
        assert "aiohttp" in ws.response.headers["Server"]
        ws.send("still serving")
        assert ws.recv(timeout=5) == "still serving"


# -- the session's handshake answer, frames and close codes --


def test_handshake_frames_and_close_codes_are_the_sessions(daphne, session, alice, upstream_port):
    with viewer_ws(daphne, session, alice, subprotocols=["chat", "superchat"]) as ws:
        assert "aiohttp" in ws.response.headers["Server"]  # daphne/autobahn would say daphne
        assert ws.subprotocol == "chat"  # the session's pick among the offered
        assert_echoes_text_and_binary(ws)
        ws.send("!close 4001")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd.code == 4001

    seen = len(httpx.get(f"http://127.0.0.1:{upstream_port}/ws-closes").json())
    with viewer_ws(daphne, session, alice) as ws:
        assert "aiohttp" in ws.response.headers["Server"]
        ws.close(4002)
    wait_until(
        lambda: 4002 in httpx.get(f"http://127.0.0.1:{upstream_port}/ws-closes").json()[seen:],
        10,
        0.05,
        "the session to see close code 4002",
    )


def test_frames_sent_with_the_handshake_are_not_lost(daphne, session, alice):
    data, key = handshake(session, alice)
    with Raw(daphne.port) as raw:
        raw.sock.sendall(data + frame("early bird") + frame(b"\x00\xff" * 100))  # one segment
        raw.opened(key)
        assert raw.frame() == (TEXT, b"early bird")
        assert raw.frame() == (BINARY, b"\x00\xff" * 100)


def test_a_burst_sent_with_the_handshake_is_not_lost(daphne, session, alice):
    """More than the front buffers before 101 (MAX_HEAD): the rest waits in the kernel for the pipe."""
    data, key = handshake(session, alice)
    messages = [f"{i:05d}".encode() * 20 for i in range(2000)]  # 200 KB
    with Raw(daphne.port) as raw:
        raw.sock.sendall(data + b"".join(frame(m, TEXT) for m in messages))
        raw.opened(key)
        assert [raw.frame() for _ in messages] == [(TEXT, m) for m in messages]


@pytest.mark.parametrize("pipelined", [False, True], ids=["after-the-response", "pipelined"])
def test_websocket_after_an_http_request_on_the_same_connection(daphne, session, alice, pipelined):
    get = f"GET /api/v1/http/{session.pk}/small HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {bearer(alice)}\r\n\r\n"
    upgrade, key = handshake(session, alice)
    with Raw(daphne.port) as raw:
        raw.sock.sendall(get.encode() + (upgrade if pipelined else b""))
        status, headers = raw.head()
        assert status == 200 and raw.read(int(headers["content-length"])) == b"hello, world\n"
        if pipelined:  # the GET's answer may still be unsent: piped or daphne's, the socket must work
            raw.sock.sendall(frame("after a GET"))
            status, headers = raw.head()
            assert status == 101 and headers["sec-websocket-accept"] == accept_for(key).decode()
        else:
            raw.sock.sendall(upgrade + frame("after a GET"))
            raw.opened(key)
        assert raw.frame() == (TEXT, b"after a GET")


def test_a_slow_browser_holds_the_session_back_and_loses_nothing(daphne, session, alice):
    count, size = 1500, 65536  # ~94 MiB
    with raw_ws(daphne, session, alice, rcvbuf=64 * 1024, timeout=30) as raw:
        before = peak = daphne.rss_kib()
        raw.sock.sendall(frame(f"!stream {count} {size}"))
        deadline = time.monotonic() + 2  # the browser reads nothing meanwhile
        while time.monotonic() < deadline:
            peak = max(peak, daphne.rss_kib())
            time.sleep(0.1)
        growth = (peak - before) / 1024
        assert growth < 48, f"daphne buffered {growth:.0f} MiB for a browser that did not read"
        received = 0
        for _ in range(count):
            opcode, payload = raw.frame()
            assert opcode == BINARY
            received += len(payload)
        assert received == count * size
        raw.sock.sendall(frame("after the stream"))
        assert raw.frame() == (TEXT, b"after the stream")


# -- what the pipe leaves to daphne --


@pytest.mark.parametrize("refusal", ["anonymous", "a viewer cookie", "no right", "cross-site"])
def test_refused_handshakes_get_403_and_the_next_connection_is_piped(daphne, session, alice, bob, refusal):
    headers = {
        "anonymous": {},
        "a viewer cookie": {"Cookie": cookie_header(session, alice)},  # a browser's: not on the prefix
        "no right": {"Authorization": bearer(bob)},
        "cross-site": {"Authorization": bearer(alice), "Origin": "http://evil.example"},
    }[refusal]
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(ws_url(daphne, session), additional_headers=headers, open_timeout=10)
    assert refused.value.response.status_code == 403
    assert "aiohttp" not in refused.value.response.headers.get("Server", "")
    assert_piped_echo(daphne, session, alice)


def test_a_plain_http_answer_to_the_handshake_is_refused_not_hung(daphne, session, alice):
    started = time.monotonic()
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(
            ws_url(daphne, session, "/small"),
            additional_headers={"Authorization": bearer(alice)},
            open_timeout=10,
        )
    assert refused.value.response.status_code == 403  # the ASGI proxy's refusal, via daphne
    assert time.monotonic() - started < 8
    assert_piped_echo(daphne, session, alice)


def test_a_hibernated_session_is_accepted_by_daphne_and_closed_with_try_again_later(
    daphne, alice, template, docker_agent, upstream_port
):
    asleep = make_session(
        alice, template, docker_agent, endpoint=f"127.0.0.1:{upstream_port}", state=SessionState.HIBERNATED
    )
    with viewer_ws(daphne, asleep, alice) as ws:
        assert "aiohttp" not in ws.response.headers.get("Server", "")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert Session.objects.get(pk=asleep.pk).state == SessionState.WAKING
    assert closed.value.rcvd.code == 4013  # 1013 TRY_AGAIN_LATER, as daphne can send it (websocket.for_browser)


# -- a session that goes away --


@contextlib.contextmanager
def dropping_session() -> Iterator[tuple[int, threading.Event]]:
    """A session that answers 101, sends one text frame and resets the TCP connection when told."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    reset = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError), listener.accept()[0] as conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            key = re.search(rb"(?i)\r\nsec-websocket-key: *(\S+)", head).group(1)
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nServer: aiohttp-like\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_for(key) + b"\r\n\r\n"
            )
            conn.sendall(frame("bye", mask=False))
            reset.wait(10)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], reset
    finally:
        reset.set()
        listener.close()
        thread.join(10)


def test_the_session_closing_mid_stream_reaches_the_browser_promptly(daphne, session, alice):
    with viewer_ws(daphne, session, alice) as ws:
        ws.send("!stream 20 65536")
        ws.send("!close 1011")
        assert sum(len(ws.recv(timeout=5)) for _ in range(20)) == 20 * 65536
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd.code == 1011
    assert time.monotonic() - started < 3
    assert_piped_echo(daphne, session, alice)


def test_a_session_connection_reset_ends_the_browsers_socket(daphne, session, alice, template, docker_agent):
    with dropping_session() as (port, reset):
        gone = make_session(alice, template, docker_agent, endpoint=f"127.0.0.1:{port}")
        with viewer_ws(daphne, gone, alice) as ws:
            assert ws.response.headers["Server"] == "aiohttp-like"
            assert ws.recv(timeout=5) == "bye"
            reset.set()
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
    assert closed.value.rcvd is None  # no close frame: the connection just ended
    assert_piped_echo(daphne, session, alice)


# -- activity --


def test_an_open_piped_websocket_keeps_last_activity_fresh(session, alice):
    """keep_alive refreshes every max(1, interval/2) s while the pipe is open, and stops with it."""
    server = start_daphne({"STREAMSPACE_ACTIVITY_WRITE_INTERVAL_S": "2"})

    def age(seconds: float) -> object:
        then = timezone.now() - timedelta(seconds=seconds)
        Session.objects.filter(pk=session.pk).update(last_activity=then)
        return then

    def refreshed(since) -> Callable[[], bool]:
        return lambda: Session.objects.get(pk=session.pk).last_activity > since

    try:
        with viewer_ws(server, session, alice) as ws:
            assert "aiohttp" in ws.response.headers["Server"]
            wait_until(refreshed(age(3600)), 10, 0.05, "the first refresh")
            # No frame moves from here on: only the open pipe's keep-alive can write.
            wait_until(refreshed(age(3600)), 10, 0.05, "the keep-alive to refresh last_activity")
        old = age(3600)
        time.sleep(2.5)  # the absence of writes cannot be awaited: longer than two keep-alive turns
        assert Session.objects.get(pk=session.pk).last_activity == old, "keep-alive outlived the pipe"
    finally:
        stop(server.process)

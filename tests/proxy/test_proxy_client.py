"""The proxy's upstream HTTP/1.1 client (sessions_app/proxy/client.py) against raw servers.

Keep-alive reuse and replay on a connection the session dropped, body framings (length,
chunked, until close, HEAD, 1xx), truncated and invalid responses, the read timeout (and
that a slow consumer is not mistaken for a slow session), bounded buffering, request
bodies (bytes, streamed with and without a length) and a failing request body.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from sessions_app.proxy import client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Server:
    """A raw TCP server: ``handler(reader, writer, connection_number)`` per connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def opener(port: int):
    async def open_(factory):
        return await asyncio.get_running_loop().create_connection(factory, "127.0.0.1", port)

    return open_


async def get(pool: client.Pool, port: int, method: bytes = b"GET", body: client.Body = None, **kw) -> client.Response:
    headers = [(b"host", b"session"), *kw.pop("headers", [])]
    return await pool.request(
        ("direct", port), opener(port), method, b"/x", headers, body, read_timeout=kw.pop("read_timeout", 5)
    )


async def test_keep_alive_reuses_one_connection():
    async def handler(reader, writer, number):
        while True:
            await read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    pool = client.Pool()
    async with Server(handler) as server:
        for _ in range(3):
            response = await get(pool, server.port)
            assert (response.status, await response.read_all()) == (200, b"ok")
            response.release()
        assert server.connections == 1
    pool.close()


async def test_a_dropped_kept_alive_connection_is_replayed_once():
    async def handler(reader, writer, number):
        await read_head(reader)
        if number == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
            await read_head(reader)  # the session restarts: the next request finds it gone
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
        await reader.read()

    pool = client.Pool()
    async with Server(handler) as server:
        first = await get(pool, server.port)
        assert await first.read_all() == b"first"
        first.release()
        second = await get(pool, server.port)
        assert await second.read_all() == b"second"
        second.release()
        assert server.connections == 2
    pool.close()


async def test_a_streamed_body_is_not_replayed():
    async def handler(reader, writer, number):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await read_head(reader)

    async def body() -> AsyncIterator[bytes]:
        yield b"once"

    pool = client.Pool()
    async with Server(handler) as server:
        (await get(pool, server.port)).release()
        with pytest.raises(client.UpstreamClosed):
            await get(pool, server.port, b"POST", body())
        assert server.connections == 1
    pool.close()


@pytest.mark.parametrize(
    ("reply", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde"),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", b"until the end"),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone",
            b"done",
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    ],
)
async def test_body_framings(reply, body):
    async def handler(reader, writer, number):
        await read_head(reader)
        writer.write(reply)
        await writer.drain()

    pool = client.Pool()
    async with Server(handler) as server:
        response = await get(pool, server.port)
        assert await response.read_all() == body
        assert response.status in (200, 201, 204)
        response.release()
    pool.close()


async def test_head_has_no_body_even_with_a_length():
    async def handler(reader, writer, number):
        head = await read_head(reader)
        assert head.startswith(b"HEAD ")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        await reader.read()

    pool = client.Pool()
    async with Server(handler) as server:
        response = await get(pool, server.port, b"HEAD")
        assert response.content_length == 1000
        assert await response.read() == b""
        response.release()
    pool.close()


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # then the session closes
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ],
)
async def test_truncated_body_is_an_error(reply):
    async def handler(reader, writer, number):
        await read_head(reader)
        writer.write(reply)

    pool = client.Pool()
    async with Server(handler) as server:
        response = await get(pool, server.port)
        with pytest.raises(client.UpstreamClosed):
            await response.read_all()
        response.release()
    pool.close()


@pytest.mark.parametrize(
    "reply",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"",  # closed without a word
    ],
)
async def test_not_http_is_upstream_closed(reply):
    async def handler(reader, writer, number):
        await read_head(reader)
        writer.write(reply)

    pool = client.Pool()
    async with Server(handler) as server:
        with pytest.raises(client.UpstreamClosed):
            response = await get(pool, server.port)
            await response.read_all()
    pool.close()


async def test_silent_session_times_out():
    async def handler(reader, writer, number):
        await reader.read()

    pool = client.Pool()
    async with Server(handler) as server:
        started = asyncio.get_running_loop().time()
        with pytest.raises(client.UpstreamTimeout):
            await get(pool, server.port, read_timeout=0.3)
        assert asyncio.get_running_loop().time() - started < 3
    pool.close()


async def test_slow_consumer_is_not_a_timeout_and_buffering_is_bounded():
    size = 4 * 1024 * 1024

    async def handler(reader, writer, number):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        chunk = b"z" * 65536
        for _ in range(size // len(chunk)):
            writer.write(chunk)
            await writer.drain()

    pool = client.Pool()
    async with Server(handler) as server:
        response = await get(pool, server.port, read_timeout=0.3)
        await asyncio.sleep(1.0)  # the browser reads nothing for longer than the read timeout
        assert response._buffered <= client.HIGH_WATER + 256 * 1024
        received = 0
        while data := await response.read():
            received += len(data)
        assert received == size
        response.release()
    pool.close()


async def test_connect_refused_is_connect_failed():
    async with Server(lambda *a: asyncio.sleep(0)) as server:
        port = server.port
    pool = client.Pool()
    with pytest.raises(client.ConnectFailed) as failed:
        await get(pool, port)
    assert not failed.value.timeout
    pool.close()


async def test_request_bodies(upstream_port):
    payload = os.urandom(3 * 1024 * 1024 + 17)

    async def streamed() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 100_000):
            yield payload[i : i + 100_000]

    expected = {"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    pool = client.Pool()
    for body, headers in (
        (payload, []),  # bytes: a Content-Length is added
        (streamed(), []),  # no length known: chunked
        (streamed(), [(b"content-length", str(len(payload)).encode())]),  # the browser's length
    ):
        response = await pool.request(
            ("direct", upstream_port),
            opener(upstream_port),
            b"POST",
            b"/upload",
            [(b"host", b"session"), *headers],
            body,
            read_timeout=10,
        )
        assert response.status == 200
        assert json.loads(await response.read_all()) == expected
        response.release()
    pool.close()


@pytest.mark.parametrize("body", [b"", None])
@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"TRACE", b"POST", b"PUT", b"PATCH"])
async def test_an_empty_body_is_framed_by_the_method(method, body):
    heads: list[bytes] = []

    async def handler(reader, writer, number):
        heads.append((await read_head(reader)).lower())
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await reader.read()

    pool = client.Pool()
    async with Server(handler) as server:
        response = await get(pool, server.port, method, body)
        assert response.status == 204
        response.release()
    pool.close()
    [head] = heads
    assert head.startswith(method.lower() + b" /x http/1.1\r\n")
    framed = method not in client.METHODS_WITHOUT_BODY and body is not None
    assert (b"content-length: 0\r\n" in head) is framed
    assert b"transfer-encoding" not in head


async def test_a_failing_request_body_propagates():
    class BrowserGone(Exception):
        pass

    async def handler(reader, writer, number):
        await reader.read()

    async def body() -> AsyncIterator[bytes]:
        yield b"part"
        raise BrowserGone

    pool = client.Pool()
    async with Server(handler) as server:
        with pytest.raises(BrowserGone):
            await get(pool, server.port, b"POST", body())
    pool.close()

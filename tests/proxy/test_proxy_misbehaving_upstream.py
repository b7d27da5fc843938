"""The HTTP proxy in-process against sessions that misbehave on the wire: a body that
stalls (504), bytes that are not HTTP (502), a connection dropped between requests (the
next request still succeeds), and keep-alive reuse of one connection for many requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from asgiref.sync import sync_to_async

from sessions_app import proxy
from sessions_app.proxy import auth, upstream
from tests.proxy.conftest import make_session, session_host
from tests.support.asgi import asgi_http

pytestmark = [pytest.mark.django_db(transaction=True)]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@pytest.fixture(autouse=True)
async def _fresh(settings):
    settings.STREAMSPACE_PROXY_AUTH_CACHE_S = 0
    settings.STREAMSPACE_PROXY_READ_TIMEOUT_S = 1
    auth.clear_cache()
    yield
    await upstream.close_clients()


async def serve(handler: Handler) -> tuple[asyncio.Server, list[int]]:
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections) + 1)
        try:
            await handler(reader, writer, len(connections))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(on_connect, "127.0.0.1", 0), connections


async def through_proxy(server: asyncio.Server, alice, template, docker_agent, path: str = "/x"):
    port = server.sockets[0].getsockname()[1]
    session = await sync_to_async(make_session)(alice, template, docker_agent, endpoint=f"127.0.0.1:{port}")
    cookie = f"{auth.VIEWER_COOKIE}={auth.make_viewer_cookie(session.pk, alice.pk)}"
    host = session_host(session)  # the browser's way in: the session's own origin
    return lambda: asgi_http(proxy.http_app, "GET", path, headers=[("cookie", cookie)], host=host)


async def test_a_body_that_stalls_is_a_504(alice, template, docker_agent):
    async def handler(reader, writer, number):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await reader.read()

    server, _ = await serve(handler)
    request = await through_proxy(server, alice, template, docker_agent)
    reply = await asyncio.wait_for(request(), 10)
    assert reply.status == 504
    assert json.loads(reply.body)["code"] == "upstream_timeout"
    server.close()


async def test_not_http_is_a_502(alice, template, docker_agent):
    async def handler(reader, writer, number):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")

    server, _ = await serve(handler)
    request = await through_proxy(server, alice, template, docker_agent)
    reply = await request()
    assert reply.status == 502
    assert json.loads(reply.body)["code"] == "upstream_unreachable"
    server.close()


async def test_keep_alive_and_a_dropped_connection(alice, template, docker_agent):
    async def handler(reader, writer, number):
        for served in range(3):
            await reader.readuntil(b"\r\n\r\n")
            if number == 1 and served == 2:
                return  # the session restarts: the third request finds the connection gone
            body = f"c{number}r{served}".encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    server, connections = await serve(handler)
    request = await through_proxy(server, alice, template, docker_agent)
    bodies = [(await request()).body for _ in range(4)]
    assert bodies == [b"c1r0", b"c1r1", b"c2r0", b"c2r1"]
    assert connections == [1, 2]
    server.close()

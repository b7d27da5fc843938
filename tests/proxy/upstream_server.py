"""A session-like upstream for proxy tests and the proxy benchmark (aiohttp).

``python -m tests.proxy.upstream_server --port 9000``

* ``GET /`` — a small HTML page; ``GET /small`` — 13 bytes of text.
* ``GET /echo`` (any method) — JSON: method, path (raw), query, headers.
* ``GET /bytes?size=N`` — N bytes streamed in 64 KiB chunks (with Content-Length).
* ``POST /upload`` — reads the body as a stream: JSON ``{"length", "sha256"}``.
* ``GET /redirect`` (relative ``Location``), ``/redirect-absolute`` (to this host),
  ``/redirect-external`` (to another host), ``/cookies`` (several ``Set-Cookie``).
* ``GET /slow?s=N`` — answers after N seconds.
* ``/ws`` — WebSocket echo (text and binary), subprotocols ``chat``/``superchat``;
  a text frame ``!close <code>`` closes with that code; ``!stream <count> <size>`` sends
  ``count`` binary frames of ``size`` bytes; ``!headers`` answers with the handshake's
  headers (JSON ``[[name, value], ...]``); ``GET /ws-closes`` lists the close codes
  clients sent.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json

from aiohttp import WSMsgType, web

SMALL = b"hello, world\n"
PAGE = b"<!doctype html><html><head><title>upstream</title></head><body>session page</body></html>"
CHUNK = b"x" * 65536
CLOSE_CODES: list[int] = []  # close codes received from clients, for /ws-closes


async def index(request: web.Request) -> web.Response:
    return web.Response(body=PAGE, content_type="text/html")


async def small(request: web.Request) -> web.Response:
    return web.Response(body=SMALL, content_type="text/plain")


async def selkies_turn(request: web.Request) -> web.Response:
    """What a Selkies server answers at ``/api/turn``: its own ICE servers."""
    return web.json_response({"iceServers": [], "from": "upstream"})


async def echo(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path.split("?")[0],
            "query": request.raw_path.partition("?")[2],
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
        }
    )


async def sized(request: web.Request) -> web.StreamResponse:
    size = int(request.query.get("size", "1048576"))
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    left = size
    while left > 0:
        piece = CHUNK if left >= len(CHUNK) else CHUNK[:left]
        await response.write(piece)
        left -= len(piece)
    await response.write_eof()
    return response


async def upload(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        length += len(chunk)
    return web.json_response({"length": length, "sha256": digest.hexdigest()})


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/target?x=1")


async def redirect_absolute(request: web.Request) -> web.Response:
    raise web.HTTPFound(f"http://{request.host}/target")


async def redirect_external(request: web.Request) -> web.Response:
    raise web.HTTPFound("https://example.org/elsewhere")


async def cookies(request: web.Request) -> web.Response:
    response = web.Response(text="cookies")
    response.headers.add("Set-Cookie", "app=1; Path=/; Domain=upstream.local; HttpOnly")
    response.headers.add("Set-Cookie", "deep=2; Path=/sub")
    response.headers.add("Set-Cookie", "sessionid=evil; Path=/")
    response.headers.add("Set-Cookie", "streamspace_viewer=evil; Path=/")
    return response


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "30")))
    return web.Response(text="late")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("chat", "superchat"), max_msg_size=64 * 1024 * 1024, compress=False)
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            if message.data.startswith("!close "):
                await ws.close(code=int(message.data.split()[1]))
                break
            if message.data == "!headers":
                await ws.send_str(
                    json.dumps([[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers])
                )
                continue
            if message.data.startswith("!stream "):
                _, count, size = message.data.split()
                payload = b"s" * int(size)
                for _ in range(int(count)):
                    await ws.send_bytes(payload)
                continue
            await ws.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    if ws.close_code is not None:
        CLOSE_CODES.append(ws.close_code)
    return ws


async def ws_closes(request: web.Request) -> web.Response:
    return web.json_response(CLOSE_CODES)


def make_app() -> web.Application:
    app = web.Application(client_max_size=0)
    app.router.add_get("/", index)
    app.router.add_get("/small", small)
    app.router.add_get("/api/turn", selkies_turn)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_get("/bytes", sized)
    app.router.add_post("/upload", upload)
    app.router.add_put("/upload", upload)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/redirect-absolute", redirect_absolute)
    app.router.add_get("/redirect-external", redirect_external)
    app.router.add_get("/cookies", cookies)
    app.router.add_get("/slow", slow)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/ws-closes", ws_closes)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()

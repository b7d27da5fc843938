"""A session-like app for sharing tests in a browser (``python -m tests.support.typing_session --port N``).

``GET /`` is a page that shows "the picture" (``#picture``: the latest frame the session
pushes over ``/ws``, one every 100 ms) and sends every key typed on it over the same
WebSocket; ``#socket`` shows ``open`` or ``closed <code>``. ``GET /typed`` lists, in order,
the keys that reached the session. It stands for an image without a view-only credential:
what keeps a viewer's typing from it is the proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from aiohttp import WSMsgType, web

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>typing session</title></head>
<body tabindex="0"><h1>Typing session</h1><p id="picture">no frame yet</p><p id="socket">connecting</p>
<script>
  var socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  socket.onopen = function () { document.getElementById("socket").textContent = "open"; };
  socket.onmessage = function (event) { document.getElementById("picture").textContent = event.data; };
  socket.onclose = function (event) { document.getElementById("socket").textContent = "closed " + event.code; };
  document.addEventListener("keydown", function (event) {
    if (socket.readyState === 1) socket.send("key:" + event.key);
  });
</script></body></html>"""

TYPED: list[str] = []


async def page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def typed(request: web.Request) -> web.Response:
    return web.json_response(TYPED)


async def socket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)

    async def frames() -> None:
        number = 0
        while not ws.closed:
            number += 1
            await ws.send_str(f"frame {number}")
            await asyncio.sleep(0.1)

    pusher = asyncio.get_running_loop().create_task(frames())
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT and message.data.startswith("key:"):
                TYPED.append(message.data[4:])
    finally:
        pusher.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await pusher
    return ws


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/typed", typed)
    app.router.add_get("/ws", socket)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()

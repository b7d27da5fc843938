"""The ceiling for anything served by daphne: an ASGI app that answers the proxy benchmark's
requests itself, with no upstream and no work (``bench/proxy_bench.py``, row ``daphne-floor``).

    daphne bench.daphne_floor_app:application

``GET /small`` — 13 bytes; ``GET /bytes?size=N`` — N bytes in 256 KiB pieces;
``/ws`` — WebSocket echo. Whatever daphne itself costs per request, per byte and per
frame shows here; the session proxy cannot be faster than this row.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

SMALL = b"hello, world\n"
PIECE = b"x" * (256 * 1024)


async def application(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
            else:
                await send({"type": "websocket.send", "text": message.get("text") or ""})
    if scope["type"] != "http":
        return
    await receive()
    if scope["path"] == "/bytes":
        size = int(parse_qs(scope["query_string"].decode()).get("size", ["1048576"])[0])
        headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(size).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if size <= 0:
            await send({"type": "http.response.body", "body": b""})
        while size > 0:
            piece = PIECE if size >= len(PIECE) else PIECE[:size]
            size -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": size > 0})
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"13")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": SMALL})

"""A test-only ASGI app that reports how the server running it is set up (tests/test_serve.py).

    python -m streamspace.serve -p <port> tests.serve_probe_app:application

``GET /`` answers JSON: the class of the running event loop and of the loop under Twisted's
reactor, the collector's freeze count and young-generation threshold, and whether Twisted's
per-request log line is skipped on the listening HTTP factory, and that factory's class.
"""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any


def _report() -> dict[str, Any]:
    from twisted.internet import reactor

    from streamspace.transport.daphne_internals import DaphneHTTPFactory, reactor_loop

    loop = asyncio.get_running_loop()
    factories = [r.factory for r in reactor.getReaders() if isinstance(getattr(r, "factory", None), DaphneHTTPFactory)]
    return {
        "loop": f"{type(loop).__module__}.{type(loop).__qualname__}",
        "reactor_loop_is_running_loop": reactor_loop(reactor) is loop,
        "frozen": gc.get_freeze_count(),
        "young_threshold": gc.get_threshold()[0],
        "twisted_log_skipped": bool(factories) and all("log" in vars(f) for f in factories),
        "factory": sorted({f"{type(f).__module__}.{type(f).__qualname__}" for f in factories}),
    }


async def application(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps(_report()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})

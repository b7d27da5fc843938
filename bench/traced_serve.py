"""``python -m streamspace.serve`` with per-request timestamps and the collector's runs recorded.

    python bench/traced_serve.py OUT.json <daphne's arguments>

Used by ``bench/read_tail.py``; not a server to deploy. For every HTTP request that carries
an ``X-Bench-Seq`` header it records, on ``time.monotonic()`` (one clock for the whole
machine, so the load client's own timestamps line up):

* ``process``: daphne's ``WebRequest.process`` (the request head and body parsed by Twisted);
* ``app``: the ASGI application called (daphne's queue and application instance made);
* ``thread`` / ``done``: the worker thread starting and ending the Django work;
* ``sent``: the response handed to daphne.

and every cyclic-garbage-collector run (``gc.callbacks``: start, end, generation, and the
collecting thread's CPU time at both). The
file is written when the server stops.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamspace import serve  # installs nothing of daphne's server yet
from streamspace.transport import django_asgi

OUT = Path(sys.argv.pop(1))
requests: dict[int, dict[str, float]] = {}
collections: list[tuple[str, int, float, float]] = []
# With BENCH_GC_GARBAGE=1, what the collector frees is kept from this request on and counted at exit.
SAVE_GARBAGE_AT = 1000 if os.environ.get("BENCH_GC_GARBAGE") == "1" else -1


def _seq(headers) -> int | None:
    for name, value in headers:
        if name == b"x-bench-seq":
            return int(value)
    return None


def _on_gc(phase: str, info: dict) -> None:
    collections.append((phase, info["generation"], time.monotonic(), time.thread_time()))


gc.callbacks.append(_on_gc)

_call = django_asgi.SyncRequestHandler.__call__
_respond = django_asgi.SyncRequestHandler.respond


async def traced_call(self, scope, receive, send):  # type: ignore[no-untyped-def]
    seq = _seq(scope.get("headers", ())) if scope["type"] == "http" else None
    if seq is None:
        return await _call(self, scope, receive, send)
    if seq == SAVE_GARBAGE_AT:
        save_garbage()
    record = requests.setdefault(seq, {})
    record["app"] = time.monotonic()

    async def traced_send(message):  # type: ignore[no-untyped-def]
        await send(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            record["sent"] = time.monotonic()

    return await _call(self, scope, receive, traced_send)


def traced_respond(self, scope, body_file):  # type: ignore[no-untyped-def]
    seq = _seq(scope.get("headers", ()))
    record = requests.setdefault(seq, {}) if seq is not None else {}
    record["thread"] = time.monotonic()
    try:
        return _respond(self, scope, body_file)
    finally:
        record["done"] = time.monotonic()


django_asgi.SyncRequestHandler.__call__ = traced_call
django_asgi.SyncRequestHandler.respond = traced_respond


def _patch_process() -> None:
    from daphne.http_protocol import WebRequest  # after serve installed uvloop

    process = WebRequest.process

    def traced_process(self):  # type: ignore[no-untyped-def]
        value = self.requestHeaders.getRawHeaders(b"x-bench-seq")
        if value:
            requests.setdefault(int(value[0]), {})["process"] = time.monotonic()
        return process(self)

    WebRequest.process = traced_process


def _garbage() -> list[tuple[str, int]]:
    """What the collector found since ``save_garbage()``: the commonest types first."""
    if not gc.get_debug() & gc.DEBUG_SAVEALL:
        return []
    gc.collect()
    kinds = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
    return kinds.most_common(60)


def save_garbage() -> None:
    """Keep what the collector frees in ``gc.garbage`` (``BENCH_GC_GARBAGE=1``), to see which cycles requests leave."""
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)


def _dump() -> None:
    OUT.write_text(json.dumps({"requests": requests, "gc": collections, "garbage": _garbage()}))


atexit.register(_dump)

if __name__ == "__main__":
    if not serve.install_uvloop():
        raise SystemExit("uvloop is required for this bench (as the real server uses it)")
    _patch_process()
    if os.environ.get("BENCH_GC_YOUNG"):  # another young-generation threshold, to compare
        serve.YOUNG_GC_THRESHOLD = int(os.environ["BENCH_GC_YOUNG"])
    serve.install_uvloop = lambda: True  # already installed; serve.main() must not import daphne first
    serve.main()

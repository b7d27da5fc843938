"""Who is connected to a session now, across replicas (docs/architecture.md §22).

Each open proxied WebSocket has one entry in the Redis hash
``streamspace:sessions:viewers:{session_id}`` (field: the connection's key; value: JSON
``{"user", "role", "share_id", "since", "seen", "pod"}``), written when it opens, refreshed
while it stays open (``sessions_app.proxy.connections.watch``) and removed when it closes.
An entry whose ``seen`` is older than ``STREAMSPACE_PRESENCE_TTL_S`` belongs to a replica
that died with the socket open: readers skip it and delete it. Without ``REDIS_URL`` the
control plane is one process and the entries live in its memory.

Blocking calls: the proxy runs them in a thread.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import redis
from django.conf import settings

from streamspace import redis_client

KEY = "streamspace:sessions:viewers:{session_id}"

_local: dict[str, dict[str, str]] = {}
_lock = threading.Lock()
_client: redis.Redis | None = None


def _redis() -> redis.Redis | None:
    global _client
    if not settings.REDIS_URL:
        return None
    if _client is None:
        _client = redis_client.client(decode_responses=True, socket_timeout=5)
    return _client


def put(session_id: Any, conn_key: str, entry: dict[str, Any]) -> None:
    """Add or refresh one open connection's entry."""
    key = KEY.format(session_id=session_id)
    value = json.dumps({**entry, "seen": time.time(), "pod": settings.POD_NAME})
    client = _redis()
    if client is None:
        with _lock:
            _local.setdefault(key, {})[conn_key] = value
        return
    pipe = client.pipeline()
    pipe.hset(key, conn_key, value)
    pipe.expire(key, settings.STREAMSPACE_PRESENCE_TTL_S * 2)
    pipe.execute()


def remove(session_id: Any, conn_key: str) -> None:
    key = KEY.format(session_id=session_id)
    client = _redis()
    if client is None:
        with _lock:
            entries = _local.get(key, {})
            entries.pop(conn_key, None)
            if not entries:
                _local.pop(key, None)
        return
    client.hdel(key, conn_key)


def connected(session_id: Any) -> list[dict[str, Any]]:
    """The open connections to ``session_id``, oldest first: ``{"user", "role", "share_id", "since"}``
    (``user`` is None for a share link's holder; ``since`` in epoch seconds)."""
    key = KEY.format(session_id=session_id)
    client = _redis()
    if client is None:
        with _lock:
            raw = dict(_local.get(key, {}))
    else:
        raw = client.hgetall(key)
    oldest = time.time() - settings.STREAMSPACE_PRESENCE_TTL_S
    rows, stale = [], []
    for conn_key, value in raw.items():
        try:
            entry = json.loads(value)
        except ValueError:
            stale.append(conn_key)
            continue
        if not isinstance(entry, dict) or entry.get("seen", 0) < oldest:
            stale.append(conn_key)
            continue
        rows.append({name: entry.get(name) for name in ("user", "role", "share_id", "since")})
    if stale and client is not None:
        client.hdel(key, *stale)
    for row in rows:
        row["user"] = row["user"] or None
    return sorted(rows, key=lambda row: row["since"] or 0)

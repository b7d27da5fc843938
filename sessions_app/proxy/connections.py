"""The proxy's open WebSockets: who is connected now, and closing them when a share ends
(docs/architecture.md §22).

Every proxied WebSocket, through the ASGI path (:mod:`.websocket`) or the front's pipe
(``streamspace.front.pipe``), runs :func:`watch` while it is open. That

* lists it in the session's "connected now" entry (:mod:`.presence`, in Redis so every
  replica's connections appear in one list), refreshed while it stays open;
* registers it in this process, so that a revocation can close it.

A revocation (a share or link revoked or narrowed, or every share ended with its session)
is announced by :func:`announce_revocation` after it commits: this process handles it at
once, and a message on the channel-layer group ``streamspace.proxy.revocations`` reaches
every other replica, whose listener (one task per process, started with its first watched
connection) does the same: forget the cached proxy decisions for the session, then re-check
each open connection on it that came in through a share and close those the share no longer
covers (or covers with a narrower role). A link's connection is also closed when the link
expires. The channel layer delivers at most once; a replica that misses a message still
refuses the next request once its cached decision lapses (``STREAMSPACE_PROXY_AUTH_CACHE_S``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model

from sessions_app import access
from sessions_app.models import Session, Share
from sessions_app.proxy import auth, presence

log = logging.getLogger(__name__)

GROUP = "streamspace.proxy.revocations"
REVOKED_CLOSE_CODE = 4403  # what a browser sees when its share ends under it
_REJOIN_S = 3600.0  # group membership expires (channels' group_expiry); joined again well before


@dataclass(eq=False)
class Connection:
    """One open proxied WebSocket; ``close`` ends it at once (called on its event loop)."""

    target: auth.SessionTarget
    close: Callable[[], None]
    loop: asyncio.AbstractEventLoop
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    since: float = field(default_factory=time.time)
    closed: bool = False

    def end(self) -> None:
        if not self.closed:
            self.closed = True
            self.close()


_open: dict[uuid.UUID, set[Connection]] = {}
_listeners: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}


async def watch(target: auth.SessionTarget, close: Callable[[], None]) -> None:
    """Run for as long as a WebSocket to ``target`` is open (cancel it when the socket ends)."""
    loop = asyncio.get_running_loop()
    conn = Connection(target=target, close=close, loop=loop)
    _open.setdefault(target.session_id, set()).add(conn)
    _ensure_listener(loop)
    expiry = None
    if target.expires_at is not None:
        expiry = loop.call_later(max(0.0, target.expires_at - time.time()), conn.end)
    entry = {
        "user": target.username,
        "role": target.role,
        "share_id": target.share_id,
        "since": conn.since,
    }
    refresh = max(3.0, settings.STREAMSPACE_PRESENCE_TTL_S / 3)
    try:
        while True:
            with contextlib.suppress(Exception):  # the list is informative: never end a socket over it
                await asyncio.to_thread(presence.put, target.session_id, conn.key, entry)
            await asyncio.sleep(refresh)
    finally:
        conn.closed = True
        if expiry is not None:
            expiry.cancel()
        peers = _open.get(target.session_id)
        if peers is not None:
            peers.discard(conn)
            if not peers:
                _open.pop(target.session_id, None)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(presence.remove, target.session_id, conn.key)


def open_count(session_id: uuid.UUID) -> int:
    """This process's open watched connections to ``session_id``."""
    return sum(1 for conn in _open.get(session_id, ()) if not conn.closed)


def announce_revocation(session_id: Any) -> None:
    """A share of ``session_id`` ended or narrowed: every replica re-checks (call after commit)."""
    session_id = uuid.UUID(str(session_id))
    handle_revocation(session_id)
    layer = get_channel_layer()
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return  # one process: handled above
    try:
        async_to_sync(layer.group_send)(GROUP, {"type": "proxy.revoke", "session": str(session_id)})
    except Exception:
        log.exception("announcing the revocation for session %s failed", session_id)


def handle_revocation(session_id: uuid.UUID) -> None:
    """This process's part of a revocation: forget decisions, re-check shared connections."""
    auth.forget_session(session_id)
    for conn in list(_open.get(session_id, ())):
        if conn.target.via_share and not conn.closed:
            conn.loop.call_soon_threadsafe(lambda c=conn: c.loop.create_task(_recheck(c)))


def _still_allowed(target: auth.SessionTarget) -> bool:
    """Whether the share that let ``target``'s caller in still covers the role it came in with."""
    if target.share_id is not None:
        share = Share.objects.filter(pk=target.share_id).values("role", "expires_at").first()
        if share is None or (share["expires_at"] is not None and share["expires_at"].timestamp() <= time.time()):
            return False
        return access.ROLE_RANK[share["role"]] >= access.ROLE_RANK[target.role]
    user = get_user_model().objects.filter(pk=target.user_id, is_active=True).first()
    session = Session.objects.filter(pk=target.session_id).first()
    role = access.role_of(user, session) if user is not None and session is not None else None
    return role is not None and access.ROLE_RANK[role] >= access.ROLE_RANK[target.role]


_still_allowed_async = database_sync_to_async(_still_allowed)


async def _recheck(conn: Connection) -> None:
    try:
        allowed = await _still_allowed_async(conn.target)
    except Exception:
        log.exception("re-checking a connection to session %s failed; closing it", conn.target.session_id)
        allowed = False
    if not allowed:
        log.info("closing a connection to session %s: its share ended", conn.target.session_id)
        conn.end()


def _ensure_listener(loop: asyncio.AbstractEventLoop) -> None:
    task = _listeners.get(loop)
    if task is not None and not task.done():
        return
    layer = get_channel_layer()
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return
    _listeners[loop] = loop.create_task(_listen(layer))


async def _listen(layer: Any) -> None:
    """Receive other replicas' revocations for as long as this process serves WebSockets."""
    while True:
        rejoin = None
        try:
            # The layer's default prefix: channels_redis reads every process-local channel of
            # one prefix through one Redis list, but a second prefix is read by a loop of its
            # own that holds the layer's receive lock while it waits, which starves every other
            # consumer of the process (the hub, the portal) for as long as this listener runs.
            channel = await layer.new_channel()
            await layer.group_add(GROUP, channel)
            rejoin = asyncio.get_running_loop().create_task(_rejoin(layer, channel))
            while True:
                message = await layer.receive(channel)
                if message.get("type") == "proxy.revoke":
                    with contextlib.suppress(ValueError, TypeError):
                        handle_revocation(uuid.UUID(str(message.get("session"))))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the proxy's revocation listener failed; starting again")
            await asyncio.sleep(1.0)
        finally:
            if rejoin is not None:
                rejoin.cancel()


async def _rejoin(layer: Any, channel: str) -> None:
    while True:
        await asyncio.sleep(_REJOIN_S)
        await layer.group_add(GROUP, channel)

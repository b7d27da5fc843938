"""Proxy traffic counts as session activity (so the idle sweep leaves watched sessions alone).

``services.record_activity`` already writes at most once per interval per session with a
conditional UPDATE; this module also avoids issuing that UPDATE for every proxied request
by remembering, per process, when it last asked. Open WebSockets call :func:`keep_alive`,
which refreshes activity periodically even when no frame moves.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, NamedTuple

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model

from sessions_app import access, services
from sessions_app.models import Session, SessionState
from streamspace.api.errors import ServiceError

log = logging.getLogger(__name__)

_last_touch: dict[uuid.UUID, float] = {}


def _interval() -> float:
    return max(1.0, settings.STREAMSPACE_ACTIVITY_WRITE_INTERVAL_S / 2)


def _record(session_id: uuid.UUID) -> bool:
    return services.record_activity(Session(pk=session_id))


_record_async = database_sync_to_async(_record)


def due(session_id: uuid.UUID) -> bool:
    """Whether :func:`touch` would record anything now (callers on hot paths skip the await)."""
    return _last_touch.get(session_id, 0.0) <= time.monotonic() - _interval()


async def touch(session_id: uuid.UUID) -> None:
    """Count a proxied request or frame as activity (cheap when called often)."""
    now = time.monotonic()
    if _last_touch.get(session_id, 0.0) > now - _interval():
        return
    _last_touch[session_id] = now
    if len(_last_touch) > 50_000:
        _last_touch.clear()
    try:
        await _record_async(session_id)
    except Exception:  # activity is best effort: never fail a request because of it
        log.exception("recording activity of session %s failed", session_id)


async def keep_alive(session_id: uuid.UUID) -> None:
    """Run while a WebSocket is open: activity is refreshed every interval."""
    while True:
        _last_touch.pop(session_id, None)
        await touch(session_id)
        await asyncio.sleep(_interval())


class WakeRefused(NamedTuple):
    status: int
    code: str
    message: str


def wake(session_id: Any, user_id: int | None) -> tuple[str, str, WakeRefused | None]:
    """Start waking a hibernated session for the viewer ``user_id``: its state, a message, and
    why it was not woken (None when waking started or was not needed).

    Only a viewer who may manage the session (``sessions_app.access.may_manage``: owner,
    operator, admin, a share that says ``may_manage``) wakes it, exactly as through the API:
    another share recipient's request, or a share link's holder (``user_id`` None), does not
    run the session on its owner's quota (403 ``wake_not_allowed``).
    """
    session = Session.objects.select_related("user", "template").get(pk=session_id)
    if session.state != SessionState.HIBERNATED:
        return session.state, session.status_message or "Waiting for the session to finish hibernating.", None
    user = get_user_model().objects.filter(pk=user_id).first() if user_id is not None else None
    if user is None or not access.may_manage(user, session):
        message = "This session is hibernated; only its owner (or an operator) can wake it."
        return session.state, message, WakeRefused(403, "wake_not_allowed", message)
    try:
        session = services.wake_session(session, actor=user)
    except ServiceError as exc:  # quota exceeded (403), or the state moved meanwhile (409)
        return session.state, str(exc.detail), WakeRefused(exc.status_code, exc.code, str(exc.detail))
    return session.state, session.status_message, None

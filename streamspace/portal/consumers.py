"""The browser's live channel: ``/ws/portal/``.

One socket per open portal page, for a signed-in user who has no two-factor enrolment
pending (``accounts.mfa.must_enrol``; else it closes with 4403). It joins the user's group
(``sessions_app.notify.user_group``) and relays every ``session.update`` the session
services broadcast on commit. The browser may send:

- ``{"type": "ping"}`` → ``{"type": "pong"}``
- ``{"type": "session.get", "session_id": "<uuid>"}`` → the current ``session.update`` (so a
  page that opens after a change still starts from the truth), or an ``error`` frame.

Anything else — bad JSON, a non-object, an unknown type, a bad id, a frame over
``MAX_FRAME_BYTES`` — gets ``{"type": "error", "code", "message"}`` and the socket stays open.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from sessions_app.notify import user_group
from streamspace.accounts import mfa
from streamspace.portal import queries

MAX_FRAME_BYTES = 16 * 1024
# Close code for a handshake without a signed-in user (4000-4999: application codes).
CLOSE_UNAUTHENTICATED = 4401
# ... and for a user who must enrol in two-factor authentication before anything else.
CLOSE_MFA_ENROLMENT_REQUIRED = 4403


class PortalConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if await database_sync_to_async(mfa.must_enrol)(user):  # as the portal's pages and the API
            await self.close(code=CLOSE_MFA_ENROLMENT_REQUIRED)
            return
        self.group = user_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self.error("bad_frame", "Send JSON text frames.")
            return
        if len(text_data.encode()) > MAX_FRAME_BYTES:
            await self.error("frame_too_large", f"Frames are limited to {MAX_FRAME_BYTES} bytes.")
            return
        try:
            frame = json.loads(text_data)
        except ValueError:
            await self.error("bad_json", "The frame is not valid JSON.")
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            await self.error("bad_frame", 'A frame is an object with a string "type".')
            return
        handler = {"ping": self.on_ping, "session.get": self.on_session_get}.get(frame["type"])
        if handler is None:
            await self.error("unknown_type", f"Unknown frame type {frame['type'][:40]!r}.")
            return
        await handler(frame)

    async def error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})

    async def on_ping(self, frame: dict[str, Any]) -> None:
        await self.send_json({"type": "pong"})

    async def on_session_get(self, frame: dict[str, Any]) -> None:
        try:
            session_id = uuid.UUID(str(frame.get("session_id")))
        except ValueError:
            await self.error("bad_session_id", "session_id must be a UUID.")
            return
        body = await self.visible_session(session_id)
        if body is None:
            await self.error("not_found", "No such session.")
            return
        await self.send_json({"type": "session.update", "session": body})

    @database_sync_to_async
    def visible_session(self, session_id: uuid.UUID) -> dict[str, Any] | None:
        return queries.visible_session_body(self.scope["user"], session_id)

    # --- group messages --------------------------------------------------------------
    async def session_update(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "session.update", "session": event["session"]})

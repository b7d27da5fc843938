"""Share links' keys: how a key is stored and found (docs/architecture.md §22).

A link's key is shown once, when the link is created (``sessions_app.sharing``); the
database keeps only its SHA-256, so a leaked database does not leak live links. The
session proxy finds the share a key names here when the key arrives on the session's
origin (``?share=<key>``) and records the use.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.utils import timezone

from sessions_app.models import Share
from streamspace import events
from streamspace.audit.services import record


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def find_link(key: str, session_id: Any) -> Share | None:
    """The live link share of ``session_id`` whose key is ``key`` (not revoked, not expired), or None."""
    if not key or len(key) > 200:
        return None
    share = Share.objects.filter(link_digest=digest(key), session_id=session_id).first()
    if share is None or (share.expires_at is not None and share.expires_at <= timezone.now()):
        return None
    return share


def record_use(share_id: int, session_id: Any, *, client_ip: str = "") -> None:
    """A link was opened (its key exchanged for the link cookie): audit and event."""
    share = Share.objects.filter(pk=share_id).select_related("session").first()
    if share is None:
        return
    details = {"share_id": share.pk, "kind": share.kind, "role": share.role, "ip": client_ip}
    record("share.use", actor_repr="share link", target=share.session, details=details)
    events.emit("share.used", actor="share link", data={"session_id": str(session_id), **details})

"""Sharing a session: grants to users and groups, share links, revocation (docs/architecture.md §22).

Every grant, use and revocation is written to the audit log (``share.grant``, ``share.use``,
``share.revoke``) and announced on the event bus (``share.granted``, ``share.used``,
``share.revoked``) once committed. A revocation takes effect at once everywhere: after it
commits, :func:`sessions_app.proxy.connections.announce_revocation` tells every replica's
proxy to forget its cached decisions for the session and to re-check (and close) the open
WebSockets that came in through a share.

Who may call these is decided by the caller (``sessions_app.access.may_share``); the
functions here check the request itself (a recipient that exists, not the owner, a valid
role and lifetime).
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.utils import timezone

from sessions_app.models import Session, Share, ShareRole
from sessions_app.proxy import connections
from sessions_app.proxy.auth import ENDED_STATES
from sessions_app.proxy.origins import session_origin
from sessions_app.share_links import digest
from streamspace import events
from streamspace.api.errors import Conflict, ServiceError
from streamspace.audit.services import record

LINK_PARAM = "share"  # ``?share=<key>`` on the session's origin (sessions_app.proxy.paths)


def describe(share: Share) -> dict[str, Any]:
    """The share as the API and the portal show it (a link's key is never in it)."""
    return {
        "id": share.pk,
        "kind": share.kind,
        "role": share.role,
        "user": share.user.get_username() if share.user_id else None,
        "group": share.group.name if share.group_id else None,
        "may_manage": share.may_manage,
        "expires_at": share.expires_at.isoformat() if share.expires_at else None,
        "created_by": share.created_by.get_username() if share.created_by_id else None,
        "created_at": share.created_at.isoformat(),
    }


def _announce(event: str, share: Share, actor: Any, extra: dict[str, Any] | None = None) -> None:
    data = {"session_id": str(share.session_id), "share_id": share.pk, "kind": share.kind, "role": share.role}
    data.update(extra or {})
    transaction.on_commit(lambda: events.emit(event, actor=actor, data=data))


def _audit(action: str, share: Share, actor: Any, request: Any, **details: Any) -> None:
    body = {"share_id": share.pk, "kind": share.kind, "role": share.role, **details}
    record(action, actor=actor, target=share.session, request=request, details=body)


def _check_shareable(session: Session) -> None:
    if session.state in ENDED_STATES:
        raise Conflict(f"The session is {session.state}; it cannot be shared.", code="session_ended")


def grant(
    session: Session,
    *,
    role: str,
    user: Any = None,
    group: Group | None = None,
    may_manage: bool = False,
    actor: Any = None,
    request: Any = None,
) -> tuple[Share, bool]:
    """Share ``session`` with ``user`` or ``group`` as ``role``: ``(share, created)``.

    Sharing again with the same recipient changes the role and ``may_manage`` of the existing
    share (a narrower grant re-checks open connections at once, as a revocation does).
    """
    _check_shareable(session)
    if user is not None and user.pk == session.user_id:
        raise ServiceError("The owner already has every right to this session.", code="share_with_owner")
    recipient = {"user": user} if user is not None else {"group": group}
    with transaction.atomic():
        share = Share.objects.select_for_update().filter(session=session, **recipient).first()
        created = share is None
        narrower = False
        if share is None:
            share = Share(session=session, role=role, may_manage=may_manage, created_by=actor, **recipient)
            try:
                with transaction.atomic():
                    share.save()
            except IntegrityError:  # a concurrent grant to the same recipient won
                raise Conflict(
                    "This recipient was just given a share; reload and try again.", code="conflict"
                ) from None
        else:
            narrower = (share.role == ShareRole.COLLABORATOR and role == ShareRole.VIEWER) or (
                share.may_manage and not may_manage
            )
            share.role, share.may_manage = role, may_manage
            share.save(update_fields=["role", "may_manage"])
        share.session = session
        recipient_name = user.get_username() if user is not None else group.name
        _audit("share.grant", share, actor, request, recipient=recipient_name, may_manage=may_manage)
        _announce("share.granted", share, actor, {"recipient": recipient_name, "may_manage": may_manage})
        if narrower:
            transaction.on_commit(lambda: connections.announce_revocation(session.pk))
    return share, created


def create_link(
    session: Session, *, role: str, expires_in_s: int, actor: Any = None, request: Any = None
) -> tuple[Share, str]:
    """A share link for ``session``: ``(share, key)``; the key is returned once and stored hashed."""
    _check_shareable(session)
    key = secrets.token_urlsafe(32)
    expires_at = timezone.now() + timedelta(seconds=expires_in_s)
    with transaction.atomic():
        share = Share.objects.create(
            session=session, role=role, link_digest=digest(key), expires_at=expires_at, created_by=actor
        )
        share.session = session
        _audit("share.grant", share, actor, request, expires_at=expires_at.isoformat())
        _announce("share.granted", share, actor, {"expires_at": expires_at.isoformat()})
    return share, key


def link_url(session_id: Any, key: str, *, scheme: str, host: str) -> str:
    """The URL a link's holder opens: the session's own origin with the key (docs §22)."""
    return f"{session_origin(session_id, scheme=scheme, host=host)}/?{LINK_PARAM}={key}"


def revoke(share: Share, *, actor: Any = None, request: Any = None) -> None:
    """End ``share`` now: its row goes, and every replica drops what it let in."""
    session_id = share.session_id
    with transaction.atomic():
        _audit("share.revoke", share, actor, request)
        _announce("share.revoked", share, actor)
        share.delete()
        transaction.on_commit(lambda: connections.announce_revocation(session_id))


def end_all(session: Session, *, actor: Any = None, reason: str = "session_stopped") -> int:
    """End every share of ``session`` (it is stopping or being deleted): how many ended.

    Runs inside the caller's transaction; the announcements follow its commit.
    """
    shares = list(Share.objects.filter(session=session).select_related("session"))
    for share in shares:
        _audit("share.revoke", share, actor, None, reason=reason)
        _announce("share.revoked", share, actor, {"reason": reason})
    if shares:
        Share.objects.filter(pk__in=[share.pk for share in shares]).delete()
        transaction.on_commit(lambda: connections.announce_revocation(session.pk))
    return len(shares)


def record_recipient_use(session: Session, user: Any, role: str, *, request: Any = None) -> None:
    """A share recipient opened the session (asked for a viewer URL): audit and event."""
    details = {"role": role, "recipient": user.get_username()}
    record("share.use", actor=user, target=session, request=request, details=details)
    data = {"session_id": str(session.pk), "kind": "user", **details}
    transaction.on_commit(lambda: events.emit("share.used", actor=user, data=data))


def resolve_recipient(*, username: str | None = None, group: str | None = None) -> Any:
    """The active user or the group named in a share request, or a 400 naming what is wrong."""
    if username is not None:
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise ServiceError(f"No active user {username!r}.", code="unknown_user")
        return user
    found = Group.objects.filter(name=group).first()
    if found is None:
        raise ServiceError(f"No group {group!r}.", code="unknown_group")
    return found

"""Writing the audit log. Every service that changes something calls :func:`record`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from streamspace.api.client_ip import request_ip
from streamspace.audit.models import AuditEvent


def record(
    action: str,
    *,
    actor: Any = None,
    actor_repr: str = "",
    target: Any = None,
    target_type: str = "",
    target_id: str = "",
    request: Any = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Write one :class:`AuditEvent`.

    ``actor`` is a user (or None for the system); ``target`` a model instance whose type and
    primary key are recorded, or give ``target_type``/``target_id`` directly.
    """
    audit_event = event(
        action,
        actor=actor,
        actor_repr=actor_repr,
        target=target,
        target_type=target_type,
        target_id=target_id,
        request=request,
        details=details,
    )
    audit_event.save(force_insert=True)
    return audit_event


def record_many(events: list[AuditEvent]) -> list[AuditEvent]:
    """Write many events built by :func:`event` with one INSERT; each stays a row of its own."""
    return AuditEvent.objects.bulk_create(events)


def event(
    action: str,
    *,
    actor: Any = None,
    actor_repr: str = "",
    target: Any = None,
    target_type: str = "",
    target_id: str = "",
    request: Any = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Build, without saving, the event :func:`record` writes (for :func:`record_many`)."""
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    if target is not None:
        target_type = target_type or target._meta.model_name
        target_id = target_id or str(target.pk)
    user_agent = ""
    if request is not None:
        user_agent = getattr(request, "META", {}).get("HTTP_USER_AGENT", "")[:512]
    return AuditEvent(
        actor=actor,
        actor_repr=actor_repr or (actor.get_username() if actor is not None else "system"),
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        ip=request_ip(request),  # resolved behind STREAMSPACE_TRUSTED_PROXIES
        user_agent=user_agent,
        details=details or {},
    )


def prune(older_than_days: int | None = None, *, batch_size: int = 5000) -> int:
    """Delete audit events older than ``older_than_days`` (default ``AUDIT_RETENTION_DAYS``).

    Deletes in batches so a first run over a large table does not hold one huge transaction.
    Returns the number of events deleted.
    """
    days = settings.AUDIT_RETENTION_DAYS if older_than_days is None else older_than_days
    if days < 1:
        raise ValueError("older_than_days must be at least 1")
    cutoff = timezone.now() - timedelta(days=days)
    total = 0
    while True:
        ids = list(AuditEvent.objects.filter(created_at__lt=cutoff).values_list("id", flat=True)[:batch_size])
        if not ids:
            break
        deleted, _ = AuditEvent.objects.filter(id__in=ids).delete()
        total += deleted
    return total

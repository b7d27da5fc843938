"""The state history of sessions (:class:`~sessions_app.models.SessionPeriod`), written at
every state change; usage reports are computed from it (``sessions_app.usage``).

Callers are :func:`sessions_app.state.transition` / ``transition_many`` and the launch that
creates a session; each runs inside the transaction that changes the state, so a period is
recorded exactly when its state change commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db.models.signals import pre_delete
from django.dispatch import receiver
from django.utils import timezone

from sessions_app.models import Session, SessionPeriod


def record(sessions: Iterable[Session], state: str, at: datetime) -> None:
    """``sessions`` entered ``state`` at ``at``: close their open periods, open the new ones."""
    sessions = list(sessions)
    if not sessions:
        return
    SessionPeriod.objects.filter(session__in=[s.pk for s in sessions], ended_at__isnull=True).update(ended_at=at)
    opened(sessions, state, at)


def opened(sessions: Iterable[Session], state: str, at: datetime) -> None:
    """New ``sessions`` (no period yet) entered ``state`` at ``at``: their first periods."""
    SessionPeriod.objects.bulk_create(first_period(s, state, at) for s in sessions)


def first_period(session: Session, state: str, at: datetime) -> SessionPeriod:
    """The period :func:`opened` writes for ``session``, built and not saved."""
    return SessionPeriod(
        session_id=session.pk,
        user_id=session.user_id,
        template_id=session.template_id,
        state=state,
        started_at=at,
        cpu_millicores=session.cpu_millicores,
        memory_mb=session.memory_mb,
    )


@receiver(pre_delete, sender=Session, dispatch_uid="sessions-history-close-on-delete")
def _close_on_delete(sender: type[Session], instance: Session, **kwargs: object) -> None:
    """A deleted session's open period ends with it (its rows stay, with ``session`` null)."""
    SessionPeriod.objects.filter(session=instance.pk, ended_at__isnull=True).update(ended_at=timezone.now())

"""Periodic session jobs as Celery tasks; the logic lives in ``sessions_app/sweeps.py``."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from sessions_app import sweeps


@shared_task(name="sessions_app.tasks.idle_sweep", ignore_result=True)
def idle_sweep() -> dict[str, Any]:
    """Hibernate idle running sessions; stop hibernated sessions past their maximum age."""
    return sweeps.idle_sweep().as_dict()


@shared_task(name="sessions_app.tasks.reconcile_quotas", ignore_result=True)
def reconcile_quotas() -> int:
    """Recompute usage from sessions and report users over their limits in the audit log."""
    return len(sweeps.reconcile_quotas())


@shared_task(name="sessions_app.tasks.stuck_sweep", ignore_result=True)
def stuck_sweep() -> int:
    """Fail sessions stuck in a transition (starting, stopping, ...) for too long."""
    return sweeps.fail_stuck_sessions(settings.STREAMSPACE_STUCK_SESSION_S)

"""Periodic agent jobs (docs/architecture.md §11) as Celery tasks; the sweeps live in ``agents_app/sweeps.py``.

Each sweep is idempotent (compare-and-set updates), so beat firing twice or two workers
running the same sweep at once do no harm.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from agents_app import sweeps


@shared_task(name="agents_app.tasks.command_sweep", ignore_result=True)
def command_sweep() -> dict[str, Any]:
    """Re-send unacked commands and expire old ones (their sessions fail)."""
    return {
        "requeued": sweeps.requeue_unacked_commands(settings.AGENT_COMMAND_ACK_TIMEOUT_S),
        "expired": sweeps.expire_old_commands(settings.AGENT_COMMAND_MAX_AGE_S),
    }


@shared_task(name="agents_app.tasks.stale_agent_sweep", ignore_result=True)
def stale_agent_sweep() -> int:
    """Mark replicas silent for three heartbeat intervals offline (leader loss is emitted)."""
    return sweeps.sweep_stale_instances(settings.AGENT_HEARTBEAT_INTERVAL_S)

"""Celery tasks of the plugins app; the logic lives in ``plugins_app/delivery.py``."""

from __future__ import annotations

from celery import shared_task

from plugins_app import delivery


# acks_late + reject_on_worker_lost: a worker killed mid-attempt loses nothing; the broker
# hands the message to another worker, whose claim succeeds once the dead one's expires.
@shared_task(name="plugins_app.tasks.deliver", ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def deliver(delivery_pk: int) -> str:
    """Make one webhook/integration delivery attempt (idempotent per attempt row)."""
    return delivery.deliver(delivery_pk)


@shared_task(name="plugins_app.tasks.dispatch_due_deliveries", ignore_result=True)
def dispatch_due_deliveries() -> int:
    """Queue attempts that are due and attempts whose worker died."""
    return delivery.dispatch_due()

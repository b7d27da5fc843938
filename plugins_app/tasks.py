"""Celery tasks of the plugins app; the logic lives in ``plugins_app/delivery.py``."""

from __future__ import annotations

from celery import shared_task

from plugins_app import delivery


# acks_late + reject_on_worker_lost: a worker killed mid-attempt loses nothing; the broker
# hands the message to another worker, whose claim succeeds once the dead one's expires.
@shared_task(
    bind=True,
    name="plugins_app.tasks.deliver",
    ignore_result=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
)
def deliver(self, delivery_pk: int) -> str:
    """Make one webhook/integration delivery attempt (idempotent per attempt row).

    A message redelivered while the dead worker's claim is still live waits for the claim
    to expire instead of being dropped.
    """
    outcome = delivery.deliver(delivery_pk)
    if outcome == "busy":
        wait = delivery.busy_for_s(delivery_pk)
        if wait is not None:
            raise self.retry(countdown=min(wait + 1, delivery.claim_seconds()))
    return outcome


@shared_task(name="plugins_app.tasks.dispatch_due_deliveries", ignore_result=True)
def dispatch_due_deliveries() -> int:
    """Queue attempts that are due and attempts whose worker died."""
    return delivery.dispatch_due()

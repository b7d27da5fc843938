"""Webhook delivery metrics for Prometheus, read from ``WebhookDelivery`` when ``/metrics`` is
scraped (deploy/prometheus/alerts.yml).

Attempts are made by Celery workers, which serve no ``/metrics``; the database records every
attempt, so counting rows gives the same numbers on every control-plane replica:

- ``streamspace_webhook_delivery_attempts_total{plugin, status}``: finished attempts
  (``succeeded`` / ``failed``); a counter because rows only accumulate
- ``streamspace_webhook_deliveries_exhausted_total{plugin}``: events given up after
  ``WEBHOOK_MAX_ATTEMPTS`` failed attempts
- ``streamspace_webhook_oldest_due_seconds``: how long the oldest due attempt has been waiting
  for a worker (grows when workers or beat are down)
"""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from plugins_app.models import DeliveryStatus, WebhookDelivery

FINISHED = [DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED]


def _families() -> tuple[CounterMetricFamily, CounterMetricFamily, GaugeMetricFamily]:
    return (
        CounterMetricFamily(
            "streamspace_webhook_delivery_attempts",
            "Finished webhook delivery attempts recorded in the database.",
            labels=["plugin", "status"],
        ),
        CounterMetricFamily(
            "streamspace_webhook_deliveries_exhausted",
            "Webhook events given up after WEBHOOK_MAX_ATTEMPTS failed attempts.",
            labels=["plugin"],
        ),
        GaugeMetricFamily(
            "streamspace_webhook_oldest_due_seconds",
            "Age of the oldest webhook attempt that is due and not yet made (0 when none).",
        ),
    )


class WebhookCollector:
    """Webhook delivery outcomes and backlog age."""

    def describe(self) -> Iterator[Metric]:
        yield from _families()

    def collect(self) -> Iterator[Metric]:
        attempts, exhausted, oldest_due = _families()
        rows = (
            WebhookDelivery.objects.filter(status__in=FINISHED)
            .order_by()
            .values("plugin__name", "status")
            .annotate(n=Count("id"))
        )
        for row in rows:
            attempts.add_metric([row["plugin__name"], row["status"]], row["n"])
        gave_up = (
            WebhookDelivery.objects.filter(
                status=DeliveryStatus.FAILED, manual=False, attempt__gte=settings.WEBHOOK_MAX_ATTEMPTS
            )
            .order_by()
            .values("plugin__name")
            .annotate(n=Count("id"))
        )
        for row in gave_up:
            exhausted.add_metric([row["plugin__name"]], row["n"])
        now = timezone.now()
        due_since = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now).aggregate(
            oldest=Min("next_attempt_at")
        )["oldest"]
        oldest_due.add_metric([], (now - due_since).total_seconds() if due_since else 0.0)
        yield from (attempts, exhausted, oldest_due)

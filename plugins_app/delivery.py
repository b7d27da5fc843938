"""Delivering events to webhook and integration plugins, with retries (docs/architecture.md §12).

The outbox pattern: an event becomes one ``WebhookDelivery`` row per subscribed plugin
(attempt 1, ``pending``); the Celery task :func:`deliver` (``acks_late``) claims a row,
makes the attempt, records it and, after a failure, creates the next attempt's row due
after ``WEBHOOK_RETRY_BASE_S * 2**(attempt-1)`` seconds, up to ``WEBHOOK_MAX_ATTEMPTS``.
:func:`dispatch_due` (every few seconds, from beat or ``run_jobs``) hands due rows and
expired claims to the queue, so nothing depends on a single broker message surviving.

Idempotency: a row is claimed with a compare-and-set (``pending`` → ``sending``, or an
expired ``sending`` claim), so a task delivered twice, or a row queued twice, makes one
attempt; a worker killed mid-attempt leaves a claim that expires, and the attempt is made
again with the same ``X-StreamSpace-Delivery`` id (receivers de-duplicate on it).
"""

from __future__ import annotations

import json
import logging
import smtplib
from datetime import timedelta
from typing import Any

import httpx
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from plugins_app import http, secrets, senders
from plugins_app.models import DeliveryStatus, Plugin, PluginType, WebhookDelivery
from streamspace import events
from streamspace.shared_cache import shared_cache

log = logging.getLogger(__name__)

DELIVERING_TYPES = (PluginType.WEBHOOK, PluginType.INTEGRATION)
REQUEUE_AFTER_S = 60  # a queued row not started this long is queued again
DISPATCH_BATCH = 200
RETRYABLE = (httpx.HTTPError, OSError, smtplib.SMTPException)


def claim_seconds() -> int:
    """How long a claim lasts: longer than one attempt can take (connect, send and read are
    each bounded by ``WEBHOOK_TIMEOUT_S``)."""
    return settings.WEBHOOK_TIMEOUT_S * 3 + 5


def busy_for_s(pk: int) -> float | None:
    """Seconds until another worker's live claim on ``pk`` expires, or None if unclaimed."""
    until = (
        WebhookDelivery.objects.filter(pk=pk, status=DeliveryStatus.SENDING)
        .values_list("claimed_until", flat=True)
        .first()
    )
    if until is None:
        return None
    return max((until - timezone.now()).total_seconds(), 0.0)


def retry_delay_s(attempt: int) -> float:
    """Delay before attempt ``attempt + 1``: the base, doubling after each failure."""
    return float(settings.WEBHOOK_RETRY_BASE_S * 2 ** (attempt - 1))


def payload_for(envelope: dict[str, Any], delivery_id: Any) -> dict[str, Any]:
    """The JSON document delivered: the event envelope plus the delivery id."""
    document = {"id": str(delivery_id), **envelope}
    return json.loads(json.dumps(document, cls=DjangoJSONEncoder))


SUBSCRIPTIONS_CACHE_KEY = "plugins:subscriptions"
SUBSCRIPTIONS_CACHE_S = 30


def _subscriptions() -> list[tuple[int, str, str, list[str]]]:
    """``(id, name, type, events)`` of every enabled webhook and integration plugin.

    Every state change emits an event, so this is read on hot paths (the agent hub, the idle
    sweep): it is cached (Redis with several replicas), dropped whenever a plugin is saved
    or deleted (:func:`invalidate`), and re-read at least every ``SUBSCRIPTIONS_CACHE_S``.
    """
    cached = events.shared(SUBSCRIPTIONS_CACHE_KEY, lambda: shared_cache().get(SUBSCRIPTIONS_CACHE_KEY))
    if cached is None:
        rows = Plugin.objects.filter(enabled=True, type__in=DELIVERING_TYPES).order_by("pk")
        cached = [
            (pk, name, type_, list(events or []))
            for pk, name, type_, events in rows.values_list("pk", "name", "type", "events")
        ]
        shared_cache().set(SUBSCRIPTIONS_CACHE_KEY, cached, SUBSCRIPTIONS_CACHE_S)
    return cached


def invalidate() -> None:
    """Forget the cached subscriptions (after a plugin is saved or removed)."""
    shared_cache().delete(SUBSCRIPTIONS_CACHE_KEY)


def subscribed_plugins(event: str) -> list[Plugin]:
    """Enabled webhook and integration plugins subscribed to ``event`` (cached; see above)."""
    return [
        Plugin(pk=pk, name=name, type=type_, events=events)
        for pk, name, type_, events in _subscriptions()
        if event in events
    ]


def queue_event(envelope: dict[str, Any]) -> list[WebhookDelivery]:
    """Create the first attempt of ``envelope`` for every subscribed plugin and queue them on commit."""
    plugins = subscribed_plugins(envelope["event"])
    if not plugins:
        return []
    now = timezone.now()
    rows = []
    for plugin in plugins:
        row = WebhookDelivery(
            plugin=plugin, event=envelope["event"], status=DeliveryStatus.PENDING, next_attempt_at=now
        )
        row.payload = payload_for(envelope, row.delivery_id)
        rows.append(row)
    with transaction.atomic():
        created = WebhookDelivery.objects.bulk_create(rows)
        ids = [row.pk for row in created]
        transaction.on_commit(lambda: enqueue(ids))
    return created


def enqueue(delivery_pks: list[int]) -> None:
    """Hand rows to the task queue. Without a broker, ``run_jobs``' dispatch delivers them
    (never the request thread: an attempt may take ``WEBHOOK_TIMEOUT_S``)."""
    if settings.CELERY_TASK_ALWAYS_EAGER or not delivery_pks:
        return
    from plugins_app.tasks import deliver  # noqa: PLC0415 tasks.py imports this module

    WebhookDelivery.objects.filter(pk__in=delivery_pks).update(queued_at=timezone.now())
    for pk in delivery_pks:
        try:
            deliver.apply_async((pk,), queue=settings.CELERY_TASK_DEFAULT_QUEUE)
        except Exception:  # broker down: dispatch_due queues the row again later
            log.exception("could not queue webhook delivery %s", pk)


def _claim(pk: int, now: Any) -> bool:
    due = Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now) | Q(
        status=DeliveryStatus.SENDING, claimed_until__lt=now
    )
    return bool(
        WebhookDelivery.objects.filter(due, pk=pk).update(
            status=DeliveryStatus.SENDING, claimed_until=now + timedelta(seconds=claim_seconds())
        )
    )


def _finish(delivery: WebhookDelivery, outcome: senders.Outcome) -> bool:
    status = DeliveryStatus.SUCCEEDED if outcome.ok else DeliveryStatus.FAILED
    return bool(
        WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(
            status=status,
            response_code=outcome.response_code,
            latency_ms=outcome.latency_ms,
            error=outcome.error[:2000],
            claimed_until=None,
            completed_at=timezone.now(),
        )
    )


def _schedule_retry(delivery: WebhookDelivery) -> WebhookDelivery | None:
    if delivery.manual or delivery.attempt >= settings.WEBHOOK_MAX_ATTEMPTS:
        return None
    delay = retry_delay_s(delivery.attempt)
    with transaction.atomic():
        following = WebhookDelivery.objects.create(
            delivery_id=delivery.delivery_id,
            plugin_id=delivery.plugin_id,
            event=delivery.event,
            payload=delivery.payload,
            attempt=delivery.attempt + 1,
            status=DeliveryStatus.PENDING,
            next_attempt_at=timezone.now() + timedelta(seconds=delay),
        )
        if delay == 0:
            transaction.on_commit(lambda: enqueue([following.pk]))
    return following


def deliver(pk: int) -> str:
    """Make the attempt ``pk`` if it is due and unclaimed; returns what happened.

    ``skipped`` (done, or not due yet), ``busy`` (another worker holds a live claim: the
    caller tries again when it expires), ``succeeded``, ``failed`` (a retry is scheduled
    unless attempts are exhausted) or ``refused`` (the URL is not allowed; not retried).
    """
    now = timezone.now()
    if not _claim(pk, now):
        return "busy" if busy_for_s(pk) is not None else "skipped"
    delivery = WebhookDelivery.objects.select_related("plugin").get(pk=pk)
    plugin = delivery.plugin
    retry = True
    if not plugin.enabled:
        outcome, retry = senders.Outcome(ok=False, error="the plugin is disabled"), False
    else:
        try:
            outcome = senders.send(plugin, delivery, secrets.read(plugin))
        except http.OutboundURLError as exc:
            outcome, retry = senders.Outcome(ok=False, error=f"refused: {exc}"), False
        except RETRYABLE as exc:
            outcome = senders.Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])
        except Exception as exc:  # a bug in a sender must not lose the event: log, retry
            log.exception("delivery %s of %s failed unexpectedly", pk, plugin.name)
            outcome = senders.Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])
    if not _finish(delivery, outcome):
        return "skipped"  # our claim expired and another worker took the attempt over
    if outcome.ok:
        return "succeeded"
    if retry:
        _schedule_retry(delivery)
        return "failed"
    return "refused"


def dispatch_due(now: Any = None, *, batch: int = DISPATCH_BATCH) -> int:
    """Queue due attempts and expired claims (every few seconds). Returns how many.

    Without a broker the attempts are made right here, one after the other.
    """
    now = now or timezone.now()
    due = Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now) & (
        Q(queued_at__isnull=True) | Q(queued_at__lt=now - timedelta(seconds=REQUEUE_AFTER_S))
    )
    expired = Q(status=DeliveryStatus.SENDING, claimed_until__lt=now)
    pks = list(
        WebhookDelivery.objects.filter(due | expired).order_by("next_attempt_at").values_list("pk", flat=True)[:batch]
    )
    if settings.CELERY_TASK_ALWAYS_EAGER:
        for pk in pks:
            deliver(pk)
    else:
        enqueue(pks)
    return len(pks)


class RedeliveryRefused(Exception):
    pass


def redeliver(plugin: Plugin, delivery_id: Any, *, actor: Any = None) -> WebhookDelivery:
    """A new manual attempt of an event already delivered (or given up on), same delivery id.

    Raises ``WebhookDelivery.DoesNotExist`` for an unknown id and :class:`RedeliveryRefused`
    while an attempt of it is still pending or in flight.
    """
    with transaction.atomic():
        attempts = WebhookDelivery.objects.select_for_update().filter(plugin=plugin, delivery_id=delivery_id)
        latest = attempts.order_by("-attempt").first()
        if latest is None:
            raise WebhookDelivery.DoesNotExist(delivery_id)
        if attempts.filter(status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING]).exists():
            raise RedeliveryRefused("An attempt of this delivery is still pending.")
        row = WebhookDelivery.objects.create(
            delivery_id=latest.delivery_id,
            plugin=plugin,
            event=latest.event,
            payload=latest.payload,
            attempt=latest.attempt + 1,
            status=DeliveryStatus.PENDING,
            next_attempt_at=timezone.now(),
            manual=True,
            requested_by=actor if getattr(actor, "is_authenticated", False) else None,
        )
        transaction.on_commit(lambda: enqueue([row.pk]))
    return row

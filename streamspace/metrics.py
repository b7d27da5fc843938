"""StreamSpace's own Prometheus metrics, computed when ``/metrics`` is scraped.

django-prometheus counts HTTP traffic (``django_http_*``). The alert rules in
``deploy/prometheus/alerts.yml`` also need state that no request path records: whether the
database and Redis answer, whether each agent has a leader, stale replicas, webhook failures
and the Celery backlog. One collector reads them from the database and Redis at scrape time,
so there is no bookkeeping on hot paths and every replica reports the same values (rules
aggregate with ``max``). A part that fails (the database is down, say) is reported through
``streamspace_metrics_collector_up{collector}`` instead of failing the whole scrape.

Registered once, from ``PortalConfig.ready`` (:func:`register_collectors`).
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Iterator
from typing import Any

import redis
from django.conf import settings
from django.core.signals import got_request_exception
from django.db import DatabaseError
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from agents_app.metrics import AgentCollector
from plugins_app.metrics import WebhookCollector
from sessions_app.metrics import SessionCollector
from streamspace import health, redis_client

log = logging.getLogger(__name__)

# kombu's Redis transport keeps a queue's messages in a list named after the queue, and
# messages of priority 3/6/9 in lists suffixed with "\x06\x16<priority>".
_KOMBU_PRIORITY_SEPARATOR = "\x06\x16"
_KOMBU_PRIORITY_STEPS = (3, 6, 9)


class DependencyCollector:
    """``streamspace_dependency_up{dependency}``: what ``/readyz`` checks, as 1 or 0."""

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "streamspace_dependency_up",
            "Whether a dependency of the control plane answers (1) or not (0), as /readyz checks it.",
            labels=["dependency"],
        )

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        family.add_metric(["database"], 0 if health._check_database() else 1)
        if settings.REDIS_URL:
            family.add_metric(["redis"], 0 if health._check_redis() else 1)
        yield family


def broker_is_redis() -> bool:
    url = settings.CELERY_BROKER_URL or ""
    return not settings.CELERY_TASK_ALWAYS_EAGER and url.startswith(("redis://", "rediss://", "unix://", "sentinel://"))


class CeleryQueueCollector:
    """``streamspace_celery_queue_messages{queue}``: messages waiting in the Redis broker."""

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "streamspace_celery_queue_messages",
            "Celery messages waiting in the broker queue (not yet taken by a worker).",
            labels=["queue"],
        )

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        if broker_is_redis():
            queue = settings.CELERY_TASK_DEFAULT_QUEUE
            keys = [queue] + [f"{queue}{_KOMBU_PRIORITY_SEPARATOR}{p}" for p in _KOMBU_PRIORITY_STEPS]
            client = redis_client.broker_client(socket_timeout=2, socket_connect_timeout=2)
            try:
                with client.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.llen(key)
                    lengths = pipe.execute()
            finally:
                client.close()
            family.add_metric([queue], sum(lengths))
        yield family


def _parts() -> dict[str, Any]:
    return {
        "dependencies": DependencyCollector(),
        "agents": AgentCollector(),
        "sessions": SessionCollector(),
        "webhooks": WebhookCollector(),
        "celery": CeleryQueueCollector(),
    }


class StreamSpaceCollector:
    """Every StreamSpace part, each guarded so one failing query does not fail the scrape."""

    def __init__(self) -> None:
        self.parts = _parts()

    @staticmethod
    def _up_family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "streamspace_metrics_collector_up",
            "Whether a StreamSpace metrics collector succeeded on this scrape (1) or failed (0).",
            labels=["collector"],
        )

    def describe(self) -> Iterator[Metric]:
        for part in self.parts.values():
            yield from part.describe()
        yield self._up_family()

    def collect(self) -> Iterator[Metric]:
        up = self._up_family()
        for name, part in self.parts.items():
            try:
                families = list(part.collect())
            except Exception as exc:  # the database or Redis is down: say so, keep the scrape
                log.warning("metrics collector %s failed: %s: %s", name, type(exc).__name__, exc)
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            yield from families
        yield up


# Keyed by the registry object itself (weakly): an ``id()`` key could be reused by a new
# registry after the old one is collected, which would then silently get no collector.
_registered: weakref.WeakKeyDictionary[CollectorRegistry, StreamSpaceCollector] = weakref.WeakKeyDictionary()


DEPENDENCY_ERRORS = Counter(
    "streamspace_dependency_errors",
    "Requests that failed with a PostgreSQL (database) or Redis error, by dependency.",
    ["dependency"],
)


def count_dependency_error(sender: Any, request: Any = None, **kwargs: Any) -> None:
    """``got_request_exception`` receiver: a request died of a database or Redis error."""
    error = sys.exc_info()[1]
    if isinstance(error, DatabaseError):
        DEPENDENCY_ERRORS.labels("database").inc()
    elif isinstance(error, redis.RedisError):
        DEPENDENCY_ERRORS.labels("redis").inc()


def register_collectors(registry: CollectorRegistry = REGISTRY) -> StreamSpaceCollector:
    """Register the StreamSpace collector with ``registry`` once (idempotent), and count
    requests that die of a database or Redis error; returns the collector."""
    got_request_exception.connect(count_dependency_error, dispatch_uid="streamspace-dependency-errors")
    collector = _registered.get(registry)
    if collector is None:
        collector = StreamSpaceCollector()
        registry.register(collector)
        _registered[registry] = collector
    return collector

"""Session metrics for an operator during an incident (deploy/prometheus/alerts.yml).

Scrape-time gauges, read from the database by :class:`SessionCollector` (every replica
reports the same values; rules aggregate with ``max``):

- ``streamspace_sessions{state, platform}``: sessions by state and platform
- ``streamspace_sessions_oldest_transitional_seconds{state, platform}``: how long the oldest
  session has been in ``pending``, ``starting`` or ``waking`` (a launch that never finishes
  shows here; the ``StreamSpaceSessionsStuckStarting`` alert reads it)

Histograms observed where the event happens, in the replica that handled it (sum them across
replicas):

- ``streamspace_session_ready_seconds{kind}``: from launch (``kind="launch"``, the session's
  creation) or from the wake request (``kind="wake"``) to ``running``
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from sessions_app.models import Session, SessionState

TRANSITIONAL = (SessionState.PENDING, SessionState.STARTING, SessionState.WAKING)

SESSION_READY = Histogram(
    "streamspace_session_ready_seconds",
    "Seconds from a launch (or a wake request) to the session running.",
    ["kind"],
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)


def observe_ready(kind: str, since: datetime | None) -> None:
    """A session reached ``running``; ``since`` is when it was launched or asked to wake."""
    if since is not None:
        SESSION_READY.labels(kind).observe(max((timezone.now() - since).total_seconds(), 0.0))


def _families() -> dict[str, GaugeMetricFamily]:
    return {
        "count": GaugeMetricFamily(
            "streamspace_sessions", "Sessions by state and platform.", labels=["state", "platform"]
        ),
        "oldest": GaugeMetricFamily(
            "streamspace_sessions_oldest_transitional_seconds",
            "Age of the oldest session still pending, starting or waking, by state and platform.",
            labels=["state", "platform"],
        ),
    }


class SessionCollector:
    """Sessions by state and platform, and the oldest unfinished launch or wake (2 queries)."""

    def describe(self) -> Iterator[Metric]:
        yield from _families().values()  # names only: registration must not touch the database

    def collect(self) -> Iterator[Metric]:
        families = _families()
        counts = Session.objects.order_by().values("state", "platform").annotate(n=Count("id"))
        for row in counts:
            families["count"].add_metric([row["state"], row["platform"] or "unplaced"], row["n"])
        now = timezone.now()
        oldest = (
            Session.objects.filter(state__in=TRANSITIONAL)
            .order_by()
            .values("state", "platform")
            .annotate(since=Min("state_changed_at"))
        )
        for row in oldest:
            age = max((now - row["since"]).total_seconds(), 0.0)
            families["oldest"].add_metric([row["state"], row["platform"] or "unplaced"], age)
        yield from families.values()

"""Usage reports: session-hours, CPU-hours and memory-GB-hours per day, from the state history.

A session accrues usage while its workload exists and holds the resources it was given:
in ``USAGE_STATES`` (starting, running, hibernating, waking, stopping). A pending session
has no workload yet, a hibernated one is scaled to zero, a stopped or failed one is gone, so
none of those accrue. Each :class:`~sessions_app.models.SessionPeriod` in a usage state
contributes its duration, clipped to the report's range and split at midnight in the site's
time zone (``TIME_ZONE``), multiplied by the CPU (cores) and memory (GiB) it held:

* ``session_hours`` = hours,
* ``cpu_hours`` = hours × millicores / 1000,
* ``memory_gb_hours`` = hours × MiB / 1024.

An open period (the current state) counts up to now. Grouped by ``user`` (the owner),
``template`` or ``group``: a user's usage counts once for each group the user belongs to
when the report is made, and under ``(no group)`` when in none.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone

from sessions_app.models import SessionPeriod, SessionState, Template

S = SessionState
USAGE_STATES = (S.STARTING, S.RUNNING, S.HIBERNATING, S.WAKING, S.STOPPING)
GROUP_BY = ("user", "group", "template")
NO_GROUP = "(no group)"
DELETED = "(deleted)"
COLUMNS = ("session_hours", "cpu_hours", "memory_gb_hours")


@dataclass
class UsageRow:
    """One day's usage of one user, group or template."""

    day: date
    key: str
    session_hours: float = 0.0
    cpu_hours: float = 0.0
    memory_gb_hours: float = 0.0

    def as_dict(self, group_by: str) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            group_by: self.key,
            **{column: round(getattr(self, column), 4) for column in COLUMNS},
        }


def _midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, datetime.min.time()), timezone.get_default_timezone())


def _days(start: datetime, end: datetime) -> Iterator[tuple[date, float]]:
    """``(day, hours)`` of the stretch ``[start, end)`` on each local calendar day it touches."""
    day = timezone.localtime(start, timezone.get_default_timezone()).date()
    while start < end:
        boundary = min(_midnight(day + timedelta(days=1)), end)
        yield day, (boundary - start).total_seconds() / 3600
        start, day = boundary, day + timedelta(days=1)


def periods(first: date, last: date, *, user: Any = None) -> Iterable[SessionPeriod]:
    """The usage-state periods that overlap the days ``first``..``last`` (inclusive)."""
    start, end = _midnight(first), _midnight(last + timedelta(days=1))
    rows = SessionPeriod.objects.filter(state__in=USAGE_STATES, started_at__lt=end).filter(
        Q(ended_at__isnull=True) | Q(ended_at__gt=start)
    )
    if user is not None:
        rows = rows.filter(user=user)
    return rows.only("user_id", "template_id", "started_at", "ended_at", "cpu_millicores", "memory_mb")


def _keys(group_by: str, found: list[SessionPeriod]) -> dict[int | None, list[str]]:
    """What each period's user or template id is reported under."""
    if group_by == "template":
        ids = {p.template_id for p in found}
        names = dict(Template.objects.filter(pk__in=ids).values_list("pk", "slug"))
    else:
        ids = {p.user_id for p in found}
        users = get_user_model().objects.filter(pk__in=ids)
        if group_by == "user":
            names = {u.pk: u.get_username() for u in users}
        else:
            groups: dict[int | None, list[str]] = {pk: [] for pk in ids}
            for user_id, name in users.values_list("pk", "groups__name"):
                if name is not None:
                    groups[user_id].append(name)
            return {pk: sorted(names) or [NO_GROUP if pk is not None else DELETED] for pk, names in groups.items()}
    return {pk: [names.get(pk, DELETED)] for pk in ids}


def report(first: date, last: date, group_by: str, *, user: Any = None) -> list[UsageRow]:
    """Usage per day and ``group_by`` key over ``first``..``last``, only non-zero rows,
    sorted by day then key; ``user`` limits it to that user's sessions."""
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {', '.join(GROUP_BY)}")
    start, end = _midnight(first), _midnight(last + timedelta(days=1))
    now = timezone.now()
    found = list(periods(first, last, user=user))
    keys = _keys(group_by, found)
    rows: dict[tuple[date, str], UsageRow] = {}
    for period in found:
        owner = period.template_id if group_by == "template" else period.user_id
        clipped_end = min(period.ended_at or now, end)
        for day, hours in _days(max(period.started_at, start), clipped_end):
            for key in keys[owner]:
                row = rows.setdefault((day, key), UsageRow(day, key))
                row.session_hours += hours
                row.cpu_hours += hours * period.cpu_millicores / 1000
                row.memory_gb_hours += hours * period.memory_mb / 1024
    return [rows[k] for k in sorted(rows) if rows[k].session_hours > 0]


def totals(rows: Iterable[UsageRow]) -> dict[str, float]:
    """The sums of the three columns over ``rows``."""
    sums = dict.fromkeys(COLUMNS, 0.0)
    for row in rows:
        for column in COLUMNS:
            sums[column] += getattr(row, column)
    return {column: round(value, 4) for column, value in sums.items()}

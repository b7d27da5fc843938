"""Periodic session jobs (docs/architecture.md §11): the idle sweep and quota reconciliation.

The Celery tasks in ``sessions_app/tasks.py`` (and ``manage.py run_jobs`` without a broker)
call these. Each is idempotent: running it twice, or on two workers at once, does no harm,
because every change goes through the state machine's compare-and-set and rows are claimed
with ``SELECT ... FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, IntegerField, Value
from django.utils import timezone

from sessions_app import services
from sessions_app.models import GroupQuota, Session, SessionState, UserQuota
from sessions_app.quotas import LIMITS
from sessions_app.state import IllegalTransition
from streamspace.audit.services import record

log = logging.getLogger(__name__)
S = SessionState

# Sessions claimed and hibernated per transaction: their rows stay locked only for the few
# milliseconds the chunk's UPDATEs and two INSERTs take.
IDLE_CLAIM_CHUNK = 50


def _idle_sessions(now: Any):
    """Running sessions whose ``last_activity + idle_timeout_s`` lies before ``now``.

    ``idle_timeout_s = 0`` means the session never idles out. ``last_activity < now`` is
    implied by the deadline but lets the ``(state, last_activity)`` index do the work.
    """
    deadline = ExpressionWrapper(
        F("last_activity")
        + ExpressionWrapper(
            ExpressionWrapper(F("idle_timeout_s"), IntegerField()) * Value(timedelta(seconds=1)), DurationField()
        ),
        output_field=DateTimeField(),
    )
    return (
        Session.objects.filter(state=S.RUNNING, idle_timeout_s__gt=0, last_activity__lt=now)
        .annotate(idle_deadline=deadline)
        .filter(idle_deadline__lt=now)
    )


def idle_sessions(now: Any = None, *, limit: int | None = None) -> list[Any]:
    """Primary keys of running sessions idle past their own timeout, oldest activity first.

    One query whatever the number of running sessions; at most ``limit`` ids.
    """
    now = now or timezone.now()
    rows = _idle_sessions(now).order_by("last_activity").values_list("pk", flat=True)
    return list(rows[:limit] if limit else rows)


def _claim(pks: list[Any], now: Any) -> list[Session]:
    """Lock those of ``pks`` still running and still idle, skipping rows another writer holds."""
    claimable = _idle_sessions(now).select_for_update(skip_locked=True, of=("self",)).filter(pk__in=pks)
    return list(claimable.order_by("last_activity"))


@dataclass
class SweepResult:
    hibernated: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"hibernated": len(self.hibernated), "stopped": len(self.stopped)}


def hibernate_idle_sessions(now: Any = None, *, batch: int | None = None) -> list[str]:
    """Hibernate running sessions idle past their ``idle_timeout_s`` (reason ``idle``).

    At most ``batch`` (``STREAMSPACE_IDLE_SWEEP_BATCH``) per call, so the number of queries
    is bounded whatever the number of running sessions; the next sweep takes the rest.
    Sessions are claimed and hibernated ``IDLE_CLAIM_CHUNK`` at a time, one transaction per
    chunk (``services.hibernate_claimed``). Activity recorded between the selection and the
    claim is honoured: the claim re-checks the deadline under the row lock.
    """
    now = now or timezone.now()
    batch = batch or settings.STREAMSPACE_IDLE_SWEEP_BATCH
    pks = idle_sessions(now, limit=batch)
    done: list[str] = []
    for start in range(0, len(pks), IDLE_CLAIM_CHUNK):
        done += _hibernate_chunk(pks[start : start + IDLE_CLAIM_CHUNK], now)
    return done


def _hibernate_chunk(pks: list[Any], now: Any) -> list[str]:
    """One transaction for the chunk; if it fails, one per session, so a bad row stops only itself."""
    try:
        with transaction.atomic():
            sessions = _claim(pks, now)
            if sessions:
                services.hibernate_claimed(sessions, reason="idle")
        return [str(session.pk) for session in sessions]
    except Exception as exc:
        if len(pks) > 1:
            log.warning("idle sweep: %d sessions together failed; retrying one by one", len(pks), exc_info=True)
            return [pk for one in pks for pk in _hibernate_chunk([one], now)]
        if not isinstance(exc, IllegalTransition):  # else another writer moved it first
            log.exception("idle sweep could not hibernate session %s", pks[0])
        return []


def stop_expired_hibernated(now: Any = None, *, max_age_s: int | None = None, batch: int | None = None) -> list[str]:
    """Stop sessions hibernated for longer than ``STREAMSPACE_HIBERNATED_MAX_AGE_S`` (0 = off)."""
    max_age_s = settings.STREAMSPACE_HIBERNATED_MAX_AGE_S if max_age_s is None else max_age_s
    if not max_age_s:
        return []
    now = now or timezone.now()
    batch = batch or settings.STREAMSPACE_IDLE_SWEEP_BATCH
    cutoff = now - timedelta(seconds=max_age_s)
    ids = list(
        Session.objects.filter(state=S.HIBERNATED, state_changed_at__lt=cutoff)
        .order_by("state_changed_at")
        .values_list("pk", flat=True)[:batch]
    )
    done: list[str] = []
    for pk in ids:
        try:
            with transaction.atomic():
                session = (
                    Session.objects.select_for_update(skip_locked=True, of=("self",))
                    .filter(pk=pk, state=S.HIBERNATED, state_changed_at__lt=cutoff)
                    .first()
                )
                if session is None:
                    continue
                services.stop_session(session)
                record(
                    "session.expire", target=session, details={"hibernated_since": session.state_changed_at.isoformat()}
                )
            done.append(str(pk))
        except IllegalTransition:
            continue
        except Exception:
            log.exception("idle sweep could not stop hibernated session %s", pk)
    return done


def idle_sweep(now: Any = None) -> SweepResult:
    """The whole idle sweep: hibernate idle sessions, then stop long-hibernated ones."""
    now = now or timezone.now()
    return SweepResult(hibernated=hibernate_idle_sessions(now), stopped=stop_expired_hibernated(now))


# --- Quota reconciliation -----------------------------------------------------------------


def _limits_by_user(user_ids: list[Any]) -> dict[Any, dict[str, int]]:
    """Effective limits of many users in two queries (same rules as ``quotas.effective_quota``)."""
    overrides = {q.user_id: q for q in UserQuota.objects.filter(user_id__in=user_ids)}
    group_limits: dict[Any, list[GroupQuota]] = defaultdict(list)
    for quota in GroupQuota.objects.filter(group__user__in=user_ids).annotate(member=F("group__user")):
        group_limits[quota.member].append(quota)
    result: dict[Any, dict[str, int]] = {}
    for user_id in user_ids:
        values: dict[str, int] = {}
        for limit in LIMITS:
            own = getattr(overrides.get(user_id), limit, None)
            if own is None:
                candidates = [getattr(q, limit) for q in group_limits[user_id] if getattr(q, limit) is not None]
                own = min(candidates) if candidates else settings.STREAMSPACE_DEFAULT_QUOTA[limit]
            values[limit] = own
        result[user_id] = values
    return result


def reconcile_quotas() -> list[dict[str, Any]]:
    """Recompute every user's usage from their sessions and report users over a limit.

    Usage is never stored, so the drift that can exist is usage above the effective limits:
    a limit lowered by an admin or a group change after launch, or sessions adopted from an
    agent's inventory. Each such user is reported once per run in the audit log
    (``quota.drift``); nothing is stopped automatically. Three queries in all.
    """
    rows = list(Session.objects.usage_by_user("user__username").order_by("user_id"))
    limits = _limits_by_user([row["user_id"] for row in rows])
    drifted: list[dict[str, Any]] = []
    for row in rows:
        usage = {"sessions": row["sessions"], "cpu_millicores": row["cpu_millicores"], "memory_mb": row["memory_mb"]}
        quota = limits[row["user_id"]]
        over = [
            limit
            for limit, used in (
                ("max_sessions", usage["sessions"]),
                ("max_cpu_millicores", usage["cpu_millicores"]),
                ("max_memory_mb", usage["memory_mb"]),
            )
            if used > quota[limit]
        ]
        if over:
            drifted.append(
                {
                    "user_id": row["user_id"],
                    "username": row["user__username"],
                    "over": over,
                    "usage": usage,
                    "quota": quota,
                }
            )
    for entry in drifted[:200]:  # a bounded report; the count says if there were more
        record(
            "quota.drift",
            target_type="user",
            target_id=str(entry["user_id"]),
            details={**entry, "drifted_users": len(drifted)},
        )
    return drifted


_TRANSITIONAL = (S.PENDING, S.STARTING, S.HIBERNATING, S.WAKING, S.STOPPING)


def fail_stuck_sessions(max_age_s: float) -> int:
    """Sessions stuck in a transitional state (starting, stopping, ...) longer than
    ``max_age_s`` become ``failed`` so users see a reason instead of a spinner."""
    cutoff = timezone.now() - timedelta(seconds=max_age_s)
    stuck = Session.objects.filter(state__in=_TRANSITIONAL, state_changed_at__lt=cutoff)
    return sum(
        services.fail_session(session, f"Stuck in {session.state} for more than {int(max_age_s)} s.")
        for session in stuck
    )

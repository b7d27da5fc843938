"""Effective quotas and usage.

A user's effective limit is resolved **per limit** (``max_sessions``, ``max_cpu_millicores``,
``max_memory_mb``):

1. the user's own override (``UserQuota``), when set;
2. else the strictest (smallest) value among the groups the user belongs to that set it;
3. else the site default, ``settings.STREAMSPACE_DEFAULT_QUOTA``.

Usage: every session that is not ``stopped``/``failed`` counts toward ``max_sessions``; CPU and
memory count only while a session holds them, i.e. in every active state except
``hibernated`` (scaled to zero). Waking a session checks CPU and memory again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import router, transaction

from sessions_app.models import GroupQuota, Session, UserQuota
from streamspace.api.prepared import Placeholder, PreparedInstances, PreparedValues
from streamspace.audit.services import record

LIMITS = ("max_sessions", "max_cpu_millicores", "max_memory_mb")


@dataclass(frozen=True)
class EffectiveQuota:
    max_sessions: int
    max_cpu_millicores: int
    max_memory_mb: int
    sources: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Usage:
    sessions: int
    cpu_millicores: int
    memory_mb: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


_UNREAD: Any = object()

# The launch path's reads of one user, compiled once per process (``streamspace.api.prepared``):
# every launch runs them, and building each queryset costs more CPU than PostgreSQL running it.
_USER = Placeholder(get_user_model()._meta.pk, -2_000_000_029)
_GROUP_FIELDS = tuple(field.attname for field in GroupQuota._meta.concrete_fields)
_group_quota_rows = PreparedValues(
    lambda shape, *, user_id: (
        GroupQuota.objects.filter(group__user=user_id).order_by("pk").values(*_GROUP_FIELDS, "group__name")
    ),
    user_id=_USER,
)
_locked_user_quota = PreparedInstances(
    UserQuota, lambda shape, *, user_id: UserQuota.objects.select_for_update().filter(user=user_id)[:1], user_id=_USER
)


# ``usage()`` as a ``values()`` query: one row, or none when the user has no live session.
_usage_rows = PreparedValues(
    lambda shape, *, user_id: Session.objects.filter(user=user_id).usage_by_user(), user_id=_USER
)


def group_quotas(user: Any) -> list[GroupQuota]:
    """The quota rows of every group ``user`` belongs to, each with its group (one query)."""
    quotas = []
    for row in _group_quota_rows.rows(None, user_id=user.pk):
        quota = GroupQuota.from_db(router.db_for_read(GroupQuota), _GROUP_FIELDS, [row[name] for name in _GROUP_FIELDS])
        quota.group = Group(pk=row["group_id"], name=row["group__name"])
        quotas.append(quota)
    return quotas


def effective_quota(user: Any, *, override: Any = _UNREAD, groups: list[GroupQuota] | None = None) -> EffectiveQuota:
    """Resolve the user's limits (see module docstring for the order).

    Callers that already hold the user's ``UserQuota`` row (``override``, possibly ``None``)
    or the group rows (``groups``) pass them in and save the queries.
    """
    if override is _UNREAD:
        override = UserQuota.objects.filter(user=user).first()
    group_quotas_ = group_quotas(user) if groups is None else groups
    values: dict[str, int] = {}
    sources: dict[str, str] = {}
    for limit in LIMITS:
        own = getattr(override, limit, None) if override else None
        if own is not None:
            values[limit], sources[limit] = own, "user"
            continue
        candidates = [(getattr(q, limit), q.group.name) for q in group_quotas_ if getattr(q, limit) is not None]
        if candidates:
            value, group_name = min(candidates)
            values[limit], sources[limit] = value, f"group:{group_name}"
            continue
        values[limit], sources[limit] = settings.STREAMSPACE_DEFAULT_QUOTA[limit], "default"
    return EffectiveQuota(sources=sources, **values)


def usage(user: Any, *, exclude_session_id: Any = None) -> Usage:
    """What the user's sessions hold now (one aggregate query)."""
    # only live rows (usage() filters on the state): the (user, state) index skips a long
    # history of stopped sessions
    if exclude_session_id is None:
        rows = _usage_rows.rows(None, user_id=user.pk)
        return Usage(**{key: rows[0][key] if rows else 0 for key in ("sessions", "cpu_millicores", "memory_mb")})
    return Usage(**Session.objects.filter(user=user).exclude(pk=exclude_session_id).usage())


def lock_user_quota(user: Any) -> UserQuota:
    """Lock the user's quota row for the rest of the transaction (created on first use).

    Every launch and wake of one user serialises on this row, so concurrent requests cannot
    both see room under the limit.
    """
    found = _locked_user_quota.instances(None, user_id=user.pk)
    row = found[0] if found else None
    if row is None:  # first launch: create the row (a racing creator wins), then lock it
        UserQuota.objects.get_or_create(user=user)
        row = UserQuota.objects.select_for_update().get(user=user)
    return row


def exceeded(quota: EffectiveQuota, current: Usage, *, sessions: int, cpu: int, memory: int) -> str | None:
    """Name of the first limit that adding the given amounts would exceed, or None."""
    if current.sessions + sessions > quota.max_sessions:
        return "max_sessions"
    if current.cpu_millicores + cpu > quota.max_cpu_millicores:
        return "max_cpu_millicores"
    if current.memory_mb + memory > quota.max_memory_mb:
        return "max_memory_mb"
    return None


def set_user_overrides(
    user: Any, limits: dict[str, int | None], *, actor: Any = None, request: Any = None
) -> UserQuota:
    """Replace the user's quota overrides (``None`` falls back to groups/site) and audit it."""
    with transaction.atomic():
        quota = lock_user_quota(user)
        before = {limit: getattr(quota, limit) for limit in LIMITS}
        for limit in LIMITS:
            setattr(quota, limit, limits.get(limit))
        quota.save()
        record(
            "quota.change",
            actor=actor,
            target=user,
            request=request,
            details={"before": before, "after": {limit: getattr(quota, limit) for limit in LIMITS}},
        )
    return quota

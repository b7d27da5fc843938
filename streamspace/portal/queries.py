"""Read-side queries behind the portal's pages (bounded query counts, values()-level rows).

Every page calls one function here (or a service); views only choose the function and the
template. Each function documents how many queries it issues so the query-count tests and
the benchmark keep it honest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet

from sessions_app import access, quotas
from sessions_app.api.representation import represent, session_rows
from sessions_app.models import ACTIVE_STATES, Session, Share, Template
from sessions_app.placement import CatalogAvailability

# Sessions in these states are shown under "My sessions"; stopped/failed are history.
LIVE_STATES = tuple(ACTIVE_STATES)


def text_param(params: Any, name: str, max_length: int) -> str:
    """A query-string filter as safe text: trimmed, bounded, without NUL (PostgreSQL refuses it)."""
    value = params.get(name, "")
    if not isinstance(value, str):
        return ""
    return value.replace("\x00", "").strip()[:max_length]


@dataclass(frozen=True)
class QuotaMeter:
    label: str
    used: int
    limit: int
    unit: str = ""

    @property
    def percent(self) -> int:
        if self.limit <= 0:
            return 100 if self.used else 0
        return min(100, round(100 * self.used / self.limit))


def quota_meters(user: Any) -> list[QuotaMeter]:
    """The user's usage against their effective limits (3 queries)."""
    quota, used = quotas.effective_quota(user), quotas.usage(user)
    return [
        QuotaMeter("Sessions", used.sessions, quota.max_sessions),
        QuotaMeter("CPU", used.cpu_millicores, quota.max_cpu_millicores, "millicores"),
        QuotaMeter("Memory", used.memory_mb, quota.max_memory_mb, "MB"),
    ]


def catalog(*, search: str = "", category: str = "") -> tuple[list[Template], list[str]]:
    """Enabled templates matching the filters, each with its ``availability``
    (:class:`sessions_app.availability.Availability`), and every category that has one
    (3 queries: templates, agents, categories)."""
    templates = Template.objects.filter(enabled=True).only(
        "slug",
        "display_name",
        "description",
        "category",
        "icon",
        "icon_digest",
        "tags",
        "platform",
        "image",
        "requires",
        "enabled",
        "default_cpu_millicores",
        "default_memory_mb",
    )
    if search:
        templates = templates.filter(
            Q(display_name__icontains=search) | Q(description__icontains=search) | Q(slug__icontains=search)
        )
    if category:
        templates = templates.filter(category=category)
    templates = list(templates)
    availability = CatalogAvailability()
    for template in templates:
        template.availability = availability.of(template)
    categories = (
        Template.objects.filter(enabled=True)
        .exclude(category="")
        .order_by("category")
        .values_list("category", flat=True)
        .distinct()
    )
    return templates, list(categories)


def user_sessions(user: Any, *, include_history: bool = False, limit: int = 100) -> list[dict[str, Any]]:
    """The user's sessions as API session objects, newest first (1 query)."""
    queryset: QuerySet[Session] = Session.objects.filter(user=user)
    if not include_history:
        queryset = queryset.filter(state__in=LIVE_STATES)
    return [represent(row) for row in session_rows(queryset.select_related(None))[:limit]]


def shared_sessions(user: Any, *, limit: int = 100) -> list[dict[str, Any]]:
    """Live sessions of others shared with ``user`` ("Shared with me"), newest first: each the API
    session object with ``role`` (the widest of the user's shares) added (1 query, 2 if any)."""
    queryset = Session.objects.shared_with(user).filter(state__in=LIVE_STATES).select_related(None)
    rows = [represent(row) for row in session_rows(queryset)[:limit]]
    if not rows:
        return rows
    roles: dict[str, str] = {}
    shares = Share.objects.for_user(user).filter(session_id__in=[row["id"] for row in rows])
    for session_id, role in shares.values_list("session_id", "role"):
        key = str(session_id)
        if key not in roles or access.ROLE_RANK[role] > access.ROLE_RANK[roles[key]]:
            roles[key] = role
    for row in rows:
        row["role"] = roles.get(str(row["id"]), "viewer")
    return rows


def visible_session(user: Any, session_id: Any) -> Session | None:
    """The session if ``user`` may view it (owner, share, operator), else None (1 query)."""
    return Session.objects.select_related("template", "user").visible_to(user).filter(pk=session_id).first()


def managed_session(user: Any, session_id: Any) -> Session | None:
    """The session if ``user`` may change it (owner or operator), else None (1 query)."""
    return Session.objects.select_related("template", "user").managed_by(user).filter(pk=session_id).first()


def visible_session_body(user: Any, session_id: Any) -> dict[str, Any] | None:
    """The API session object if ``user`` may view the session, else None (1 query)."""
    row = session_rows(Session.objects.visible_to(user).filter(pk=session_id)).first()
    return represent(row) if row else None

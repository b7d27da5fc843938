"""Read-side queries of the operator panel. Each documents its query count."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.paginator import Page, Paginator
from django.db.models import Count, Prefetch, Q, QuerySet

from agents_app.models import Agent, AgentInstance
from plugins_app.models import Plugin, WebhookDelivery
from sessions_app import icons, quotas
from sessions_app.api.representation import represent, session_rows
from sessions_app.models import ACTIVE_STATES, GroupQuota, Session, SessionState, Template
from streamspace.audit.models import AuditEvent
from streamspace.portal.queries import text_param

PAGE_SIZE = 50


def paginate(queryset: Any, page_number: Any, per_page: int = PAGE_SIZE) -> Page:
    """One page (2 queries: count + rows); out-of-range or garbage numbers give the nearest page."""
    return Paginator(queryset, per_page).get_page(page_number)


def overview() -> dict[str, Any]:
    """Counts for the operations dashboard (5 queries)."""
    by_state = dict(Session.objects.values_list("state").annotate(n=Count("id")).order_by())
    instances = AgentInstance.objects.aggregate(
        connected_count=Count("id", filter=Q(connected=True)),
        leader_count=Count("id", filter=Q(connected=True, is_leader=True)),
    )
    return {
        "sessions_by_state": [(state, by_state.get(state, 0)) for state in SessionState.values],
        "active_sessions": sum(by_state.get(state, 0) for state in ACTIVE_STATES),
        "agents": Agent.objects.count(),
        "connected_instances": instances["connected_count"],
        "leaders": instances["leader_count"],
        "users": get_user_model().objects.count(),
        "recent_audit": list(AuditEvent.objects.all()[:10]),
    }


def agents() -> list[Agent]:
    """Every agent with its replicas (leader first) and session/command counts (2 queries)."""
    return list(Agent.objects.with_replicas_and_counts())


@dataclass
class SessionFilters:
    state: str = ""
    user: str = ""
    template: str = ""
    agent: str = ""
    q: str = ""

    @classmethod
    def from_query(cls, params: Any) -> SessionFilters:
        state = params.get("state", "")
        return cls(
            state=state if state in SessionState.values or state == "active" else "",
            user=text_param(params, "user", 150),
            template=text_param(params, "template", 64),
            agent=text_param(params, "agent", 64),
            q=text_param(params, "q", 100),
        )

    def apply(self, queryset: QuerySet[Session]) -> QuerySet[Session]:
        if self.state == "active":
            queryset = queryset.filter(state__in=ACTIVE_STATES)
        elif self.state:
            queryset = queryset.filter(state=self.state)
        if self.user:
            queryset = queryset.filter(user__username=self.user)
        if self.template:
            queryset = queryset.filter(template__slug=self.template)
        if self.agent:
            queryset = queryset.filter(agent__agent_id=self.agent)
        if self.q:
            queryset = queryset.filter(Q(name__icontains=self.q) | Q(id__startswith=self.q.lower()[:36]))
        return queryset


def all_sessions(filters: SessionFilters, page_number: Any) -> tuple[Page, list[dict[str, Any]]]:
    """Every user's sessions matching the filters, one page as API objects (2 queries)."""
    page = paginate(session_rows(filters.apply(Session.objects.all())), page_number)
    return page, [represent(row) for row in page.object_list]


def filter_choices() -> dict[str, list[str]]:
    """Template and agent ids for the session filters (2 queries)."""
    return {
        "templates": list(Template.objects.values_list("slug", flat=True)),
        "agents": list(Agent.objects.values_list("agent_id", flat=True)),
    }


@dataclass
class UserRow:
    user: Any
    groups: list[str]
    limits: dict[str, int]
    sources: dict[str, str]
    usage: dict[str, int] = field(default_factory=lambda: {"sessions": 0, "cpu_millicores": 0, "memory_mb": 0})


def users(search: str, page_number: Any) -> tuple[Page, list[UserRow]]:
    """One page of users with effective quotas and usage, resolved in bulk (5 queries).

    Same resolution order as ``sessions_app.quotas.effective_quota`` (user override, then the
    strictest group value, then the site default), computed for the whole page at once.
    """
    queryset = (
        get_user_model()
        .objects.select_related("quota")
        .prefetch_related(Prefetch("groups", queryset=Group.objects.select_related("quota")))
        .order_by("username")
    )
    if search:
        queryset = queryset.filter(Q(username__icontains=search) | Q(email__icontains=search))
    page = paginate(queryset, page_number)
    people = list(page.object_list)
    usage = {r["user_id"]: r for r in Session.objects.filter(user__in=[u.pk for u in people]).usage_by_user()}
    rows = []
    for person in people:
        override = getattr(person, "quota", None) if hasattr(person, "quota") else None
        group_quotas = [g.quota for g in person.groups.all() if hasattr(g, "quota")]
        limits, sources = {}, {}
        for limit in quotas.LIMITS:
            own = getattr(override, limit, None) if override else None
            candidates = [(getattr(q, limit), q.group.name) for q in group_quotas if getattr(q, limit) is not None]
            if own is not None:
                limits[limit], sources[limit] = own, "user"
            elif candidates:
                limits[limit], group_name = min(candidates)
                sources[limit] = f"group:{group_name}"
            else:
                limits[limit], sources[limit] = settings.STREAMSPACE_DEFAULT_QUOTA[limit], "default"
        used = usage.get(person.pk, {"sessions": 0, "cpu_millicores": 0, "memory_mb": 0})
        rows.append(
            UserRow(
                user=person,
                groups=[g.name for g in person.groups.all()],
                limits=limits,
                sources=sources,
                usage={key: used[key] for key in ("sessions", "cpu_millicores", "memory_mb")},
            )
        )
    return page, rows


def groups() -> list[tuple[Group, GroupQuota | None, int]]:
    """Every group with its quota and member count (1 query)."""
    result = []
    for group in Group.objects.select_related("quota").annotate(members=Count("user")).order_by("name"):
        result.append((group, getattr(group, "quota", None) if hasattr(group, "quota") else None, group.members))
    return result


def templates() -> list[dict[str, Any]]:
    """Every template (enabled or not) with its active-session count and its icon slot
    (``icon_badge``) (1 query)."""
    rows = list(
        Template.objects.annotate(active_sessions=Count("sessions", filter=Q(sessions__state__in=ACTIVE_STATES)))
        .values(
            "slug",
            "display_name",
            "category",
            "icon",
            "icon_digest",
            "platform",
            "image",
            "enabled",
            "default_cpu_millicores",
            "default_memory_mb",
            "active_sessions",
            "updated_at",
        )
        .order_by("category", "display_name")
    )
    for row in rows:
        row["icon_badge"] = icons.badge(
            slug=row["slug"], display_name=row["display_name"], icon=row["icon"], icon_digest=row["icon_digest"]
        )
    return rows


@dataclass
class AuditFilters:
    action: str = ""
    actor: str = ""
    target: str = ""

    @classmethod
    def from_query(cls, params: Any) -> AuditFilters:
        return cls(
            action=text_param(params, "action", 64),
            actor=text_param(params, "actor", 150),
            target=text_param(params, "target", 128),
        )

    def apply(self, queryset: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        if self.action:
            queryset = queryset.filter(action__startswith=self.action)
        if self.actor:
            queryset = queryset.filter(actor_repr=self.actor)
        if self.target:
            queryset = queryset.filter(target_id=self.target)
        return queryset


def audit(filters: AuditFilters, page_number: Any) -> Page:
    """One page of the audit log, newest first (2 queries)."""
    return paginate(filters.apply(AuditEvent.objects.all()), page_number)


def plugins() -> list[Plugin]:
    """Every plugin with its delivery counts (1 query)."""
    return list(
        Plugin.objects.annotate(
            deliveries_ok=Count("deliveries", filter=Q(deliveries__status="succeeded")),
            deliveries_failed=Count("deliveries", filter=Q(deliveries__status="failed")),
        )
    )


def deliveries(plugin_name: str, page_number: Any) -> Page:
    """One page of the webhook delivery log, optionally of one plugin (2 queries)."""
    queryset = WebhookDelivery.objects.select_related("plugin").defer("payload")
    if plugin_name:
        queryset = queryset.filter(plugin__name=plugin_name)
    return paginate(queryset, page_number)

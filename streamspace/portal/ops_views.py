"""The operator panel (beside the Django admin): agents, all sessions, users and quotas,
templates, plugins and the audit log. Operators see the platform pages; user quotas, plugins
and the audit log need the admin role, as in the API."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from sessions_app import quotas, services
from sessions_app.models import Session, SessionState, Template
from streamspace.api.errors import ServiceError
from streamspace.api.permissions import is_admin, is_operator
from streamspace.audit.services import record
from streamspace.portal import ops_queries
from streamspace.portal.forms import BulkStopForm, QuotaForm, TemplateForm
from streamspace.portal.queries import text_param


def _role_required(check: Callable[[Any], bool]) -> Callable:
    def decorator(view: Callable) -> Callable:
        @wraps(view)
        @login_required
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not check(request.user):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


operator_required = _role_required(is_operator)
admin_required = _role_required(is_admin)


def _render(request: HttpRequest, template: str, section: str, context: dict[str, Any]) -> HttpResponse:
    return render(request, template, {"nav_active": "ops", "ops_section": section, **context})


@require_GET
@operator_required
def overview(request: HttpRequest) -> HttpResponse:
    return _render(request, "portal/ops/overview.html", "overview", ops_queries.overview())


@require_GET
@operator_required
def agents(request: HttpRequest) -> HttpResponse:
    return _render(request, "portal/ops/agents.html", "agents", {"agents": ops_queries.agents()})


@require_http_methods(["GET", "POST"])
@operator_required
def sessions(request: HttpRequest) -> HttpResponse:
    """Every user's sessions with filters; POST stops the selected ones."""
    if request.method == "POST":
        form = BulkStopForm(request.POST)
        if form.is_valid():
            stopped, refused = 0, 0
            for session in Session.objects.filter(pk__in=form.cleaned_data["sessions"]):
                try:
                    services.stop_session(session, actor=request.user, request=request)
                    stopped += 1
                except ServiceError:
                    refused += 1
            messages.success(request, f"Stop requested for {stopped} session(s).")
            if refused:
                messages.warning(request, f"{refused} session(s) could not be stopped.")
        else:
            messages.error(request, " ".join(form.errors.get("sessions", ["Invalid selection."])))
        return redirect(request.get_full_path())
    filters = ops_queries.SessionFilters.from_query(request.GET)
    page, rows = ops_queries.all_sessions(filters, request.GET.get("page"))
    return _render(
        request,
        "portal/ops/sessions.html",
        "sessions",
        {
            "filters": filters,
            "page": page,
            "sessions": rows,
            "states": SessionState.values,
            "choices": ops_queries.filter_choices(),
            "sessions_root": reverse("portal:sessions"),
            "querystring": _querystring_without_page(request),
        },
    )


def _querystring_without_page(request: HttpRequest) -> str:
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()


@require_GET
@admin_required
def users(request: HttpRequest) -> HttpResponse:
    search = text_param(request.GET, "q", 150)
    page, rows = ops_queries.users(search, request.GET.get("page"))
    return _render(
        request,
        "portal/ops/users.html",
        "users",
        {
            "page": page,
            "rows": rows,
            "search": search,
            "groups": ops_queries.groups(),
            "users_root": reverse("portal:ops-users"),
            "querystring": _querystring_without_page(request),
        },
    )


@require_http_methods(["GET", "POST"])
@admin_required
def user_quota(request: HttpRequest, user_id: int) -> HttpResponse:
    person = get_object_or_404(get_user_model(), pk=user_id)
    override = quotas.UserQuota.objects.filter(user=person).first()
    if request.method == "POST":
        form = QuotaForm(request.POST)
        if form.is_valid():
            quotas.set_user_overrides(person, form.cleaned_data, actor=request.user, request=request)
            messages.success(request, f"Quota of {person.get_username()} saved.")
            return redirect("portal:ops-users")
    else:
        form = QuotaForm(initial={limit: getattr(override, limit, None) for limit in quotas.LIMITS})
    return _render(
        request,
        "portal/ops/user_quota.html",
        "users",
        {"person": person, "form": form, "effective": quotas.effective_quota(person), "usage": quotas.usage(person)},
    )


@require_GET
@operator_required
def templates(request: HttpRequest) -> HttpResponse:
    return _render(
        request,
        "portal/ops/templates.html",
        "templates",
        {"templates": ops_queries.templates(), "templates_root": reverse("portal:ops-templates")},
    )


@require_http_methods(["GET", "POST"])
@operator_required
def template_edit(request: HttpRequest, slug: str | None = None) -> HttpResponse:
    """Create or edit a catalog template (validated exactly like the API)."""
    instance = get_object_or_404(Template, slug=slug) if slug else None
    form = TemplateForm(request.POST or None, request.FILES or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        template = form.save()
        action = "template.update" if instance else "template.create"
        record(
            action, actor=request.user, target=template, request=request, details={"fields": sorted(form.changed_data)}
        )
        messages.success(request, f"Template {template.display_name} saved.")
        return redirect("portal:ops-templates")
    return _render(request, "portal/ops/template_edit.html", "templates", {"form": form, "template": instance})


@require_GET
@admin_required
def plugins(request: HttpRequest) -> HttpResponse:
    plugin_name = text_param(request.GET, "plugin", 64)
    return _render(
        request,
        "portal/ops/plugins.html",
        "plugins",
        {
            "plugins": ops_queries.plugins(),
            "plugin_name": plugin_name,
            "deliveries": ops_queries.deliveries(plugin_name, request.GET.get("page")),
            "querystring": _querystring_without_page(request),
        },
    )


@require_GET
@admin_required
def audit(request: HttpRequest) -> HttpResponse:
    filters = ops_queries.AuditFilters.from_query(request.GET)
    return _render(
        request,
        "portal/ops/audit.html",
        "audit",
        {
            "filters": filters,
            "page": ops_queries.audit(filters, request.GET.get("page")),
            "querystring": _querystring_without_page(request),
        },
    )

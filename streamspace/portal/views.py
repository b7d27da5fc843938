"""The user-facing portal: catalog, launch, my sessions, launch progress and the viewer.

Views are thin: they read through ``streamspace.portal.queries`` and change things only
through ``sessions_app.services``. Actions are plain form POSTs (they work without
JavaScript); the page scripts send the same POSTs with ``Accept: application/json`` and get
the API session object (or the API error shape) back instead of a redirect.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from sessions_app import access, launch_reports, services
from sessions_app.api.representation import represent_one
from sessions_app.models import SessionState, Template
from streamspace.api.errors import ServiceError
from streamspace.portal import queries

# Portal action name -> service function. Stop is the API's DELETE.
SESSION_ACTIONS = {
    "hibernate": services.hibernate_session,
    "wake": services.wake_session,
    "stop": services.stop_session,
}
# Launch-progress steps shown on the progress page, in order.
LAUNCH_STEPS = (
    (SessionState.PENDING, "Queued for an agent"),
    (SessionState.STARTING, "Starting the workload"),
    (SessionState.RUNNING, "Ready"),
)


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _error_json(error: ServiceError) -> JsonResponse:
    return JsonResponse({"code": error.code, "detail": error.detail, **error.extra}, status=error.status_code)


def _safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return default


@require_GET
@login_required
def catalog(request: HttpRequest) -> HttpResponse:
    search = queries.text_param(request.GET, "q", 100)
    category = queries.text_param(request.GET, "category", 64)
    templates, categories = queries.catalog(search=search, category=category)
    return render(
        request,
        "portal/catalog.html",
        {
            "nav_active": "catalog",
            "templates": templates,
            "categories": categories,
            "search": search,
            "category": category,
            "launch_root": reverse("portal:launch", args=["slug"]).removesuffix("slug"),
            "quota": queries.quota_meters(request.user),
        },
    )


@require_POST
@login_required
def launch(request: HttpRequest, slug: str) -> HttpResponse:
    """Launch the template and go to the session's live progress page."""
    template = get_object_or_404(Template, slug=slug, enabled=True)
    try:
        session = services.launch_session(
            request.user,
            template,
            persistent_home=request.POST.get("persistent_home", "on") == "on",
            request=request,
        )
    except ServiceError as error:
        if _wants_json(request):
            return _error_json(error)
        messages.error(request, f"Could not launch {template.display_name}: {error.detail}")
        return redirect("portal:catalog")
    if _wants_json(request):
        return JsonResponse(represent_one(session.pk), status=202)
    return redirect("portal:session", session_id=session.pk)


@require_GET
@login_required
def my_sessions(request: HttpRequest) -> HttpResponse:
    include_history = request.GET.get("history") == "1"
    return render(
        request,
        "portal/sessions.html",
        {
            "nav_active": "sessions",
            "sessions": queries.user_sessions(request.user, include_history=include_history),
            "shared": queries.shared_sessions(request.user),
            "include_history": include_history,
            "sessions_root": reverse("portal:sessions"),
            "quota": queries.quota_meters(request.user),
        },
    )


@require_GET
@login_required
def session_progress(request: HttpRequest, session_id: Any) -> HttpResponse:
    """Launch (or wake) progress; the page moves on to the viewer once the session runs.

    The steps are the ones the agent reported (with their durations), or the session's
    states for an agent that reports none. A failed session shows why: its message, its
    workload's exit status and, to those who may read its logs (owner, operators), the tail
    of the workload's output.
    """
    session = queries.visible_session(request.user, session_id)
    if session is None:
        raise Http404
    can_read_logs = access.may_manage(request.user, session)
    logs = launch_reports.logs_body(session) if can_read_logs and session.state == SessionState.FAILED else None
    return render(
        request,
        "portal/session_progress.html",
        {
            "nav_active": "sessions",
            "session": represent_one(session.pk),
            "steps": LAUNCH_STEPS,
            "logs": logs,
            "logs_url": reverse("session-logs", args=[session.pk]) if can_read_logs else "",
        },
    )


@require_GET
@login_required
def session_viewer(request: HttpRequest, session_id: Any) -> HttpResponse:
    """The viewer page; a hibernated session is woken when opened (if the caller may)."""
    session = queries.visible_session(request.user, session_id)
    if session is None:
        raise Http404
    if session.state in (SessionState.STOPPING, SessionState.STOPPED, SessionState.FAILED):
        messages.warning(request, f"{session.name} is {session.state}; it cannot be opened.")
        return redirect("portal:sessions")
    can_manage = access.may_manage(request.user, session)
    if session.state == SessionState.HIBERNATED and can_manage:
        try:
            services.wake_session(session, actor=request.user, request=request)
        except ServiceError as error:
            messages.error(request, f"Could not wake {session.name}: {error.detail}")
            return redirect("portal:sessions")
    return render(
        request,
        "portal/viewer.html",
        {
            "session": represent_one(session.pk),
            "can_manage": can_manage,
            "can_share": access.may_share(request.user, session),
            "role": access.role_of(request.user, session),
            "owner_name": session.user.get_username(),
            "can_write_files": access.may_write_files(request.user, session),
            "upload_max_bytes": settings.STREAMSPACE_UPLOAD_MAX_BYTES,
            "body_class": "viewer-page",
        },
    )


@require_POST
@login_required
def session_action(request: HttpRequest, session_id: Any, action: str) -> HttpResponse:
    """Hibernate, wake or stop a session the caller owns (operators: any session)."""
    service = SESSION_ACTIONS.get(action)
    if service is None:
        raise Http404
    session = queries.managed_session(request.user, session_id)
    if session is None:
        raise Http404
    try:
        session = service(session, actor=request.user, request=request)
    except ServiceError as error:
        if _wants_json(request):
            return _error_json(error)
        messages.error(request, f"Could not {action} {session.name}: {error.detail}")
    else:
        if _wants_json(request):
            return JsonResponse(represent_one(session.pk), status=202)
        messages.success(request, f"{session.name}: {action} requested.")
    return redirect(_safe_next(request, "/sessions/"))


@require_GET
@login_required
def template_icon(request: HttpRequest, slug: str) -> HttpResponse:
    """A template's uploaded icon (``sessions_app.icons``). Cached for a year when asked for by
    its current digest (``?v=``), which changes with every upload; sandboxed so an SVG opened
    directly cannot run script on the portal's origin."""
    row = (
        Template.objects.filter(slug=slug)
        .exclude(icon_digest="")
        .values("icon_file", "icon_file_type", "icon_digest")
        .first()
    )
    if row is None:
        raise Http404("This template has no uploaded icon.")
    response = HttpResponse(bytes(row["icon_file"]), content_type=row["icon_file_type"])
    current = request.GET.get("v") == row["icon_digest"]
    response["Cache-Control"] = "private, max-age=31536000, immutable" if current else "private, no-cache"
    response["ETag"] = f'"{row["icon_digest"]}"'
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    return response

"""Sessions and catalog API. Thin: parse, authorise, call a service, serialise."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_app import access, launch_reports, notify, services, sharing, turn
from sessions_app.api.representation import represent, represent_one, represent_written, session_rows
from sessions_app.api.serializers import (
    SessionCreateSerializer,
    SessionLogsSerializer,
    SessionSerializer,
    TemplateSerializer,
    TurnSerializer,
    ViewerUrlSerializer,
)
from sessions_app.models import Session, SessionState, Template
from sessions_app.placement import CatalogAvailability
from sessions_app.viewer import viewer_url
from streamspace import fanout
from streamspace.accounts.credentials import epoch_of
from streamspace.accounts.models import Role
from streamspace.api.errors import Conflict, ServiceError
from streamspace.api.permissions import NotReadScope, ReadAnyWriteOperator, is_operator
from streamspace.api.prepared import Placeholder, PreparedInstances, PreparedValues
from streamspace.audit.services import record


class TemplateListView(generics.ListCreateAPIView):
    """The catalog. Everyone sees enabled templates; operators also see disabled ones and edit."""

    serializer_class = TemplateSerializer
    permission_classes = [ReadAnyWriteOperator]
    pagination_class = None

    def get_queryset(self) -> QuerySet[Template]:
        queryset = Template.objects.all()
        if not is_operator(self.request.user):
            queryset = queryset.filter(enabled=True)
        category = self.request.query_params.get("category")
        if category:
            queryset = queryset.filter(category=category)
        return queryset

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "availability": CatalogAvailability()}

    def perform_create(self, serializer: TemplateSerializer) -> None:
        template = serializer.save()
        record("template.create", actor=self.request.user, target=template, request=self.request)


class TemplateDetailView(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = TemplateSerializer
    permission_classes = [ReadAnyWriteOperator]
    lookup_field = "slug"
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Template]:
        if is_operator(self.request.user):
            return Template.objects.all()
        return Template.objects.filter(enabled=True)

    def perform_update(self, serializer: TemplateSerializer) -> None:
        template = serializer.save()
        record(
            "template.update",
            actor=self.request.user,
            target=template,
            request=self.request,
            details={"fields": sorted(serializer.validated_data)},
        )

    def perform_destroy(self, instance: Template) -> None:
        if instance.sessions.exists():
            raise Conflict("Sessions were launched from this template; disable it instead.", code="template_in_use")
        record("template.delete", actor=self.request.user, target=instance, request=self.request)
        instance.delete()


def session_queryset() -> QuerySet[Session]:
    return Session.objects.select_related("user", "template", "agent")


def _visible_sessions(request: Request, *, manage: bool) -> QuerySet[Session]:
    """The sessions the caller may change (``manage``) or see."""
    queryset = session_queryset()
    return queryset.managed_by(request.user) if manage else queryset.visible_to(request.user)


def _session_for(request: Request, session_id: Any, *, manage: bool) -> Session:
    """The session, or 404 for anyone who may not see it (so ids cannot be probed)."""
    return get_object_or_404(_visible_sessions(request, manage=manage), pk=session_id)


# The launch's template lookup compiled once per process (``streamspace.api.prepared``).
_enabled_template = PreparedInstances(
    Template,
    lambda shape, *, slug: Template.objects.filter(slug=slug, enabled=True).order_by("pk")[:1],
    slug=Placeholder(Template._meta.get_field("slug"), "\x00stand-in-slug"),
)


class SessionListView(generics.GenericAPIView):
    serializer_class = SessionSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("all", bool, description="Operators: every user's sessions."),
            OpenApiParameter("state", str, enum=SessionState.values),
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int),
        ],
        responses=SessionSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        """The caller's sessions, newest first (operators: ``?all=1`` for everyone's)."""
        queryset = session_queryset()
        if not (request.query_params.get("all") in ("1", "true") and is_operator(request.user)):
            queryset = queryset.filter(user=request.user)
        state = request.query_params.get("state")
        if state:
            if state not in SessionState.values:
                raise ServiceError(f"Unknown state {state!r}.", code="invalid")
            queryset = queryset.filter(state=state)
        page = self.paginate_queryset(session_rows(queryset))
        return self.get_paginated_response([represent(row) for row in page])

    @extend_schema(request=SessionCreateSerializer, responses={202: SessionSerializer})
    def post(self, request: Request) -> Response:
        """Launch a session from a template. Answers 202 with the ``pending`` session."""
        body = SessionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        found = _enabled_template.instances(None, slug=data["template"])
        template = found[0] if found else None
        if template is None:
            raise ServiceError(f"No enabled template {data['template']!r}.", code="unknown_template")
        resources = data.get("resources") or {}
        # The launch's broadcast waits for the response's representation and reuses it; both
        # are the session as the launch wrote it, not read back (the command to the agent
        # still goes out on commit).
        session, announcements = fanout.run_deferred(
            services.launch_session,
            request.user,
            template,
            cpu_millicores=resources.get("cpu_millicores"),
            memory_mb=resources.get("memory_mb"),
            persistent_home=data["persistent_home"],
            idle_timeout_s=data.get("idle_timeout_s"),
            name=data.get("name"),
            request=request,
        )
        bodies = []
        try:
            bodies.append(represent_written(session))
        finally:
            with notify.represented(bodies):
                fanout.flush(announcements)
        return Response(bodies[0], status=status.HTTP_202_ACCEPTED)


def _one_visible_session(is_operator: bool, *, user_id: Any, session_id: Any) -> QuerySet:
    """``session_rows(...visible_to(user).filter(pk=session_id)).first()``'s query, for ``PreparedValues``."""
    user = get_user_model()(pk=user_id, role=Role.OPERATOR if is_operator else Role.USER)
    rows = session_rows(session_queryset().visible_to(user).filter(pk=session_id))
    return (rows if rows.ordered else rows.order_by("pk"))[:1]


# The one-session read compiled once per process (``streamspace.api.prepared``).
_one_session = PreparedValues(
    _one_visible_session,
    user_id=Placeholder(get_user_model()._meta.pk, -2_000_000_017),
    session_id=Placeholder(Session._meta.pk, uuid.UUID("5e55105e-0000-4000-8000-00000000d1d0")),
)


class SessionDetailView(APIView):
    @extend_schema(responses=SessionSerializer)
    def get(self, request: Request, session_id: Any) -> Response:
        user = request.user
        rows = _one_session.rows(user.is_operator, user_id=user.pk, session_id=session_id)
        if not rows:
            raise Http404
        return Response(represent(rows[0]))

    @extend_schema(responses={202: SessionSerializer})
    def delete(self, request: Request, session_id: Any) -> Response:
        """Stop the session and remove its workload (the home volume is kept)."""
        session = services.stop_session(
            _session_for(request, session_id, manage=True), actor=request.user, request=request
        )
        return Response(represent_one(session.pk), status=status.HTTP_202_ACCEPTED)


class _SessionActionView(APIView):
    action_name = ""

    @extend_schema(request=None, responses={202: SessionSerializer})
    def post(self, request: Request, session_id: Any) -> Response:
        session = _session_for(request, session_id, manage=True)
        action = getattr(services, f"{self.action_name}_session")
        session = action(session, actor=request.user, request=request)
        return Response(represent_one(session.pk), status=status.HTTP_202_ACCEPTED)


class SessionHibernateView(_SessionActionView):
    """Scale the session to zero; its home is kept. 409 unless running."""

    action_name = "hibernate"


class SessionWakeView(_SessionActionView):
    """Bring a hibernated session back (quota re-checked)."""

    action_name = "wake"


class SessionHeartbeatView(APIView):
    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, session_id: Any) -> Response:
        """Mark the session as in use so the idle sweep leaves it running."""
        session = _session_for(request, session_id, manage=False)
        services.record_activity(session)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SessionLogsView(APIView):
    @extend_schema(responses=SessionLogsSerializer)
    def get(self, request: Request, session_id: Any) -> Response:
        """How the session's launch went and, if its workload died, how it ended.

        The launch's steps with their durations, the workload's exit status and the last
        lines of its output as the agent reported them with the failure (at most 8 KiB,
        secrets masked). For those who manage the session (owner, operators, admins): the
        output may hold what the owner alone should see, so anyone else, a user the session
        is shared with included, gets 404.
        """
        return Response(launch_reports.logs_body(_session_for(request, session_id, manage=True)))


class SessionViewerUrlView(APIView):
    # The viewer sends input to the session: a read-scoped API token may not obtain one.
    permission_classes = [IsAuthenticated, NotReadScope]

    @extend_schema(responses=ViewerUrlSerializer)
    def get(self, request: Request, session_id: Any) -> Response:
        """A short-lived URL that opens the session on its own origin, bound to this session and caller.

        Needs a JWT, the portal's cookie or an API token with the write (or admin) scope.
        """
        session = _session_for(request, session_id, manage=False)
        if session.state in (SessionState.STOPPING, SessionState.STOPPED, SessionState.FAILED):
            raise Conflict(
                f"The session is {session.state}.", code="session_not_viewable", extra={"state": session.state}
            )
        role = access.role_of(request.user, session)
        if role != access.OWNER and role is not None:
            sharing.record_recipient_use(session, request.user, role, request=request)
        url = viewer_url(
            session.id, request.user.pk, scheme=request.scheme, host=request.get_host(), epoch=epoch_of(request.user)
        )
        return Response({"url": url, "expires_in": settings.STREAMSPACE_VIEWER_TOKEN_TTL_S})


class SessionTurnView(APIView):
    # The same callers as the viewer URL: whoever may open the viewer may relay its stream.
    permission_classes = [IsAuthenticated, NotReadScope]

    @extend_schema(responses=TurnSerializer)
    def get(self, request: Request, session_id: Any) -> Response:
        """ICE servers for the session's WebRTC transport, with TURN credentials for the caller.

        TURN credentials follow the TURN REST API scheme (username ``<expiry>:<user id>``,
        HMAC-SHA1 password) and expire after ``STREAMSPACE_TURN_TTL_S``; ``iceServers`` is
        empty when the site names no TURN or STUN server (the WebSocket transport needs none).
        """
        session = _session_for(request, session_id, manage=False)
        if session.state in (SessionState.STOPPING, SessionState.STOPPED, SessionState.FAILED):
            raise Conflict(
                f"The session is {session.state}.", code="session_not_viewable", extra={"state": session.state}
            )
        response = Response(turn.ice_servers(request.user.pk))
        response["Cache-Control"] = "no-store"
        return response

from __future__ import annotations

from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers

from streamspace.api.errors import ServiceError
from streamspace.api.permissions import IsAdminRole
from streamspace.audit.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "actor",
            "actor_repr",
            "action",
            "target_type",
            "target_id",
            "ip",
            "user_agent",
            "details",
        ]


def _datetime_param(request, name: str):
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = parse_datetime(raw)
    except ValueError:
        value = None
    if value is None:
        raise ServiceError(f"{name} must be an ISO 8601 date-time", code="invalid")
    return value


@extend_schema(
    parameters=[
        OpenApiParameter("action", str),
        OpenApiParameter("actor", str),
        OpenApiParameter("target_type", str),
        OpenApiParameter("target_id", str),
        OpenApiParameter("since", str, description="ISO 8601"),
        OpenApiParameter("until", str),
    ]
)
class AuditListView(generics.ListAPIView):
    """The audit log, newest first (admin). Filters: action, actor (username), target, time range."""

    serializer_class = AuditEventSerializer
    permission_classes = [IsAdminRole]

    def get_queryset(self):
        params = self.request.query_params
        queryset = AuditEvent.objects.all()
        for field, lookup in (
            ("action", "action"),
            ("actor", "actor_repr"),
            ("target_type", "target_type"),
            ("target_id", "target_id"),
        ):
            if params.get(field):
                queryset = queryset.filter(**{lookup: params[field]})
        since, until = _datetime_param(self.request, "since"), _datetime_param(self.request, "until")
        if since:
            queryset = queryset.filter(created_at__gte=since)
        if until:
            queryset = queryset.filter(created_at__lt=until)
        return queryset

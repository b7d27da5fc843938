"""``GET /api/v1/usage``: usage per day from the state history (``sessions_app.usage``), as
JSON or CSV. Operators and admins see everyone's; a user sees their own."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_app import usage
from streamspace.api.permissions import is_operator

MAX_DAYS = 366


class UsageCSVRenderer(BaseRenderer):
    """The report's rows as CSV: ``day,<group_by>,session_hours,cpu_hours,memory_gb_hours``."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["day", data["group_by"], *usage.COLUMNS], lineterminator="\n")
        writer.writeheader()
        writer.writerows(data["rows"])
        return out.getvalue().encode()


class UsageQuery(serializers.Serializer):
    """The report's query string: ``from``/``to`` (YYYY-MM-DD, default this month so far),
    ``group_by`` and ``format``. ``from`` is a Python keyword, hence ``get_fields``."""

    to = serializers.DateField(required=False, input_formats=["%Y-%m-%d"])
    group_by = serializers.ChoiceField(choices=usage.GROUP_BY, default="user")
    format = serializers.ChoiceField(choices=("json", "csv"), required=False)

    def get_fields(self) -> dict[str, serializers.Field]:
        return {"from": serializers.DateField(required=False, input_formats=["%Y-%m-%d"]), **super().get_fields()}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        today = timezone.localdate()
        first = attrs.get("from") or today.replace(day=1)
        last = attrs.get("to") or today
        if first > last:
            raise serializers.ValidationError({"from": "from must not be after to."})
        if (last - first) > timedelta(days=MAX_DAYS - 1):
            raise serializers.ValidationError({"to": f"A report covers at most {MAX_DAYS} days."})
        return {**attrs, "from": first, "to": last}


class UsageView(APIView):
    renderer_classes = [JSONRenderer, UsageCSVRenderer]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[Any, str]:
        # ``?format=`` is validated by UsageQuery (a 400 naming the choices); an unknown
        # value must not become DRF's bare 404 here, so it falls back to JSON.
        if request.query_params.get("format") not in (None, "json", "csv"):
            return JSONRenderer(), JSONRenderer.media_type
        return super().perform_content_negotiation(request, force)

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        # Only a report is CSV: errors and OPTIONS metadata stay the API's JSON, whatever
        # format was asked for.
        renderer = getattr(request, "accepted_renderer", None)
        if isinstance(renderer, UsageCSVRenderer) and not (isinstance(response.data, dict) and "rows" in response.data):
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema(
        parameters=[
            OpenApiParameter("from", str, description="First day, YYYY-MM-DD (default: the 1st of this month)"),
            OpenApiParameter("to", str, description="Last day, inclusive (default: today)"),
            OpenApiParameter("group_by", str, enum=list(usage.GROUP_BY)),
            OpenApiParameter("format", str, enum=["json", "csv"]),
        ],
        responses={200: dict},
    )
    def get(self, request: Request) -> Response:
        """Session-hours, CPU-hours and memory-GB-hours per day and user, group or template."""
        query = UsageQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        first: date = query.validated_data["from"]
        last: date = query.validated_data["to"]
        group_by = query.validated_data["group_by"]
        mine = None if is_operator(request.user) else request.user
        rows = usage.report(first, last, group_by, user=mine)
        body = {
            "from": first.isoformat(),
            "to": last.isoformat(),
            "group_by": group_by,
            "scope": "own" if mine is not None else "all",
            "rows": [row.as_dict(group_by) for row in rows],
            "totals": usage.totals(rows),
        }
        response = Response(body)
        if request.accepted_renderer.format == "csv":
            response["Content-Disposition"] = f'attachment; filename="usage-{first}-{last}-{group_by}.csv"'
        return response

"""Plugins admin API (docs/architecture.md §4): thin views over ``plugins_app.services`` and ``delivery``."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from plugins_app import delivery, registry, services
from plugins_app.api.serializers import (
    AvailableExtensionSerializer,
    DeliverySerializer,
    PluginCreateSerializer,
    PluginSerializer,
    PluginUpdateSerializer,
    RedeliverSerializer,
)
from plugins_app.models import Plugin, WebhookDelivery
from streamspace.api.errors import Conflict
from streamspace.api.pagination import Pagination
from streamspace.api.permissions import IsAdminRole
from streamspace.audit.services import record


class PluginListView(APIView):
    permission_classes = [IsAdminRole]

    @extend_schema(responses=PluginSerializer(many=True), parameters=[OpenApiParameter("type", str)])
    def get(self, request: Request) -> Response:
        """Installed plugins (admin)."""
        plugins = Plugin.objects.select_related("installed_by").order_by("name")
        if request.query_params.get("type"):
            plugins = plugins.filter(type=request.query_params["type"])
        paginator = Pagination()
        page = paginator.paginate_queryset(plugins, request, view=self)
        return paginator.get_paginated_response(PluginSerializer(page, many=True).data)

    @extend_schema(request=PluginCreateSerializer, responses={201: PluginSerializer})
    def post(self, request: Request) -> Response:
        """Install (register) and configure a plugin (admin)."""
        body = PluginCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        plugin = services.install_plugin(**body.validated_data, actor=request.user, request=request)
        return Response(PluginSerializer(plugin).data, status=status.HTTP_201_CREATED)


class PluginDetailView(APIView):
    permission_classes = [IsAdminRole]

    def _plugin(self, pk: int) -> Plugin:
        return get_object_or_404(Plugin.objects.select_related("installed_by"), pk=pk)

    @extend_schema(responses=PluginSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(PluginSerializer(self._plugin(pk)).data)

    @extend_schema(request=PluginUpdateSerializer, responses=PluginSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        """Configure, enable or disable a plugin (admin)."""
        plugin = self._plugin(pk)
        body = PluginUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        plugin = services.update_plugin(plugin, **body.validated_data, actor=request.user, request=request)
        return Response(PluginSerializer(plugin).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        """Remove a plugin and its delivery log (admin)."""
        services.remove_plugin(self._plugin(pk), actor=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AvailableExtensionsView(APIView):
    permission_classes = [IsAdminRole]

    @extend_schema(responses=AvailableExtensionSerializer(many=True))
    def get(self, request: Request) -> Response:
        """Extension packages found in the ``streamspace.plugins`` entry-point group (admin)."""
        rows: list[dict[str, Any]] = [
            {
                "name": item.name,
                "ok": item.ok,
                "error": item.error,
                "distribution": item.distribution,
                "meta": item.meta,
            }
            for item in registry.available().values()
        ]
        return Response(AvailableExtensionSerializer(rows, many=True).data)


class DeliveryListView(APIView):
    permission_classes = [IsAdminRole]

    @extend_schema(
        responses=DeliverySerializer(many=True),
        parameters=[OpenApiParameter("status", str), OpenApiParameter("event", str)],
    )
    def get(self, request: Request, pk: int) -> Response:
        """Every delivery attempt of the plugin, newest first (admin)."""
        plugin = get_object_or_404(Plugin, pk=pk)
        attempts = WebhookDelivery.objects.filter(plugin=plugin).order_by("-created_at", "-attempt")
        for key in ("status", "event"):
            if request.query_params.get(key):
                attempts = attempts.filter(**{key: request.query_params[key]})
        paginator = Pagination()
        page = paginator.paginate_queryset(attempts, request, view=self)
        return paginator.get_paginated_response(DeliverySerializer(page, many=True).data)


class RedeliverView(APIView):
    permission_classes = [IsAdminRole]

    @extend_schema(request=None, responses={202: DeliverySerializer})
    def post(self, request: Request, pk: int, delivery_id: Any) -> Response:
        """Deliver an event again (a new manual attempt with the same delivery id) (admin)."""
        RedeliverSerializer(data=request.data).is_valid(raise_exception=True)
        plugin = get_object_or_404(Plugin, pk=pk)
        try:
            attempt = delivery.redeliver(plugin, delivery_id, actor=request.user)
        except WebhookDelivery.DoesNotExist:
            return Response({"code": "not_found", "detail": "No such delivery."}, status=status.HTTP_404_NOT_FOUND)
        except delivery.RedeliveryRefused as exc:
            raise Conflict(str(exc), code="delivery_pending") from exc
        record(
            "plugin.redeliver",
            actor=request.user,
            target=plugin,
            request=request,
            details={"delivery_id": str(delivery_id), "attempt": attempt.attempt},
        )
        return Response(DeliverySerializer(attempt).data, status=status.HTTP_202_ACCEPTED)

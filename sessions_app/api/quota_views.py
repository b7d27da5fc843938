from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_app import quotas
from sessions_app.api.serializers import QuotaLimitsSerializer
from sessions_app.models import UserQuota
from streamspace.api.permissions import IsAdminRole
from streamspace.audit.services import record


def quota_body(user: Any) -> dict[str, Any]:
    quota = quotas.effective_quota(user)
    override = UserQuota.objects.filter(user=user).first()
    return {
        "user": user.get_username(),
        "limits": {limit: getattr(quota, limit) for limit in quotas.LIMITS},
        "sources": quota.sources,
        "overrides": {limit: getattr(override, limit, None) for limit in quotas.LIMITS},
        "usage": quotas.usage(user).as_dict(),
    }


class MyQuotaView(APIView):
    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        """Your effective limits, where each comes from, and current usage."""
        return Response(quota_body(request.user))


class UserQuotaView(APIView):
    permission_classes = [IsAdminRole]

    @extend_schema(responses={200: dict})
    def get(self, request: Request, user_id: int) -> Response:
        return Response(quota_body(get_object_or_404(get_user_model(), pk=user_id)))

    @extend_schema(request=QuotaLimitsSerializer, responses={200: dict})
    def put(self, request: Request, user_id: int) -> Response:
        """Set the user's overrides; ``null`` (or omitting a limit) falls back to groups/site."""
        user = get_object_or_404(get_user_model(), pk=user_id)
        body = QuotaLimitsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        with transaction.atomic():
            quota = quotas.lock_user_quota(user)
            before = {limit: getattr(quota, limit) for limit in quotas.LIMITS}
            for limit in quotas.LIMITS:
                setattr(quota, limit, body.validated_data.get(limit))
            quota.save()
            record(
                "quota.change",
                actor=request.user,
                target=user,
                request=request,
                details={"before": before, "after": {limit: getattr(quota, limit) for limit in quotas.LIMITS}},
            )
        return Response(quota_body(user))

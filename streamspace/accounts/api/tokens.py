"""Personal API tokens: ``GET/POST /api/v1/tokens``, ``GET/DELETE /api/v1/tokens/<id>``."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from streamspace.accounts.models import ApiToken, TokenScope
from streamspace.accounts.tokens import create_token, revoke_token
from streamspace.api.errors import Forbidden
from streamspace.api.pagination import Pagination
from streamspace.api.strict import StrictFieldsMixin


class ApiTokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "scope", "created_at", "expires_at", "last_used_at", "revoked_at"]


class ApiTokenCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scope = serializers.ChoiceField(choices=TokenScope.choices, default=TokenScope.READ)
    expires_in_days = serializers.IntegerField(min_value=1, max_value=366, required=False, allow_null=True)


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(help_text="The key; shown only in this answer.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]


def _refuse_token_auth(request: Request) -> None:
    # A leaked token must not be able to mint or revoke tokens (persistence, lock-out).
    if isinstance(request.auth, ApiToken):
        raise Forbidden("Manage API tokens with a password sign-in, not with an API token.", code="token_not_allowed")


class ApiTokenListView(APIView):
    @extend_schema(responses=ApiTokenSerializer(many=True))
    def get(self, request: Request) -> Response:
        """Your active tokens (never the keys)."""
        paginator = Pagination()
        queryset = ApiToken.objects.filter(user=request.user, revoked_at__isnull=True)
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(ApiTokenSerializer(page, many=True).data)

    @extend_schema(request=ApiTokenCreateSerializer, responses={201: ApiTokenCreatedSerializer})
    def post(self, request: Request) -> Response:
        """Create a token; its key is in this answer only (``token``)."""
        _refuse_token_auth(request)
        body = ApiTokenCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        token, key = create_token(request.user, request=request, **body.validated_data)
        data: dict[str, Any] = dict(ApiTokenSerializer(token).data)
        data["token"] = key
        return Response(data, status=status.HTTP_201_CREATED)


class ApiTokenDetailView(APIView):
    @extend_schema(responses=ApiTokenSerializer)
    def get(self, request: Request, token_id: int) -> Response:
        """One of your tokens."""
        return Response(ApiTokenSerializer(get_object_or_404(ApiToken, pk=token_id, user=request.user)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, token_id: int) -> Response:
        """Revoke one of your tokens (it stops working at once)."""
        _refuse_token_auth(request)
        token = get_object_or_404(ApiToken, pk=token_id, user=request.user, revoked_at__isnull=True)
        revoke_token(token, actor=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)

"""User administration over the API (admin): list users, read one, change role or activity."""

from __future__ import annotations

from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from streamspace.accounts.mfa import has_totp
from streamspace.accounts.models import Role, User
from streamspace.accounts.services import set_role
from streamspace.api.errors import Conflict
from streamspace.api.permissions import IsAdminRole
from streamspace.api.strict import StrictFieldsMixin
from streamspace.audit.services import record


class AdminUserSerializer(serializers.ModelSerializer):
    groups = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    mfa_enabled = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = ["id", "username", "email", "role", "is_active", "groups", "mfa_enabled", "last_login", "date_joined"]

    def get_mfa_enabled(self, user: User) -> bool:
        return has_totp(user)


class UserUpdateSerializer(StrictFieldsMixin, serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices, required=False)
    is_active = serializers.BooleanField(required=False)


@extend_schema(parameters=[OpenApiParameter("role", str), OpenApiParameter("q", str, description="username contains")])
class UserListView(generics.ListAPIView):
    """All users (admin), filterable by role and username."""

    serializer_class = AdminUserSerializer
    permission_classes = [IsAdminRole]

    def get_queryset(self):
        queryset = User.objects.order_by("username").prefetch_related("groups")
        params = self.request.query_params
        if params.get("role"):
            queryset = queryset.filter(role=params["role"])
        if params.get("q"):
            queryset = queryset.filter(username__icontains=params["q"][:150])
        return queryset


class UserDetailView(APIView):
    permission_classes = [IsAdminRole]

    @extend_schema(responses=AdminUserSerializer)
    def get(self, request: Request, user_id: int) -> Response:
        """One user (admin)."""
        return Response(AdminUserSerializer(get_object_or_404(User, pk=user_id)).data)

    @extend_schema(request=UserUpdateSerializer, responses=AdminUserSerializer)
    def patch(self, request: Request, user_id: int) -> Response:
        """Change a user's role or deactivate them (admin; audited). Admins cannot demote themselves."""
        body = UserUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        with transaction.atomic():
            user = get_object_or_404(User.objects.select_for_update(), pk=user_id)
            if user.pk == request.user.pk and (
                data.get("role", Role.ADMIN) != Role.ADMIN or data.get("is_active") is False
            ):
                raise Conflict("You cannot demote or deactivate yourself.", code="self_demotion")
            if "role" in data:
                set_role(user, data["role"], actor=request.user, request=request)
            if "is_active" in data and data["is_active"] != user.is_active:
                user.is_active = data["is_active"]
                user.save(update_fields=["is_active"])
                record(
                    "user.activated" if user.is_active else "user.deactivated",
                    actor=request.user,
                    target=user,
                    request=request,
                )
        return Response(AdminUserSerializer(user).data)

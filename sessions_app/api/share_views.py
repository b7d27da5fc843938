"""The shares of a session (docs/architecture.md §22): list, grant, create a link, revoke.

``GET/POST /api/v1/sessions/<id>/shares`` and ``DELETE /api/v1/sessions/<id>/shares/<share_id>``.
Who may: the session's owner, operators and admins (``access.may_share``). A recipient, who
sees the session, gets 403; anyone who may not see it gets 404 (ids cannot be probed).
A ``read``-scope API token lists but never grants or revokes.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_app import access, sharing
from sessions_app.api.views import session_queryset
from sessions_app.models import Session, Share, ShareRole
from sessions_app.proxy import presence
from streamspace.api.errors import Forbidden, ServiceError
from streamspace.api.permissions import NotReadScope
from streamspace.api.strict import StrictFieldsMixin


class ShareCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    """Exactly one of ``user`` (a username), ``group`` (a group name) or ``link: true``."""

    user = serializers.CharField(required=False, max_length=150)
    group = serializers.CharField(required=False, max_length=150)
    link = serializers.BooleanField(required=False)
    role = serializers.ChoiceField(choices=ShareRole.choices, required=False, default=ShareRole.VIEWER)
    may_manage = serializers.BooleanField(required=False, default=False)
    expires_in_s = serializers.IntegerField(required=False, min_value=60)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        given = [name for name in ("user", "group") if name in data] + (["link"] if data.get("link") else [])
        if len(given) != 1:
            raise serializers.ValidationError(
                'Give exactly one recipient: "user": "<username>", "group": "<name>" or "link": true.'
            )
        if "link" in data and not data["link"] and given != ["link"]:
            raise serializers.ValidationError('"link" may only be true.')
        if given == ["link"]:
            if "expires_in_s" not in data:
                raise serializers.ValidationError({"expires_in_s": "A link needs a lifetime in seconds."})
            if data["expires_in_s"] > settings.STREAMSPACE_SHARE_LINK_MAX_S:
                raise serializers.ValidationError(
                    {"expires_in_s": f"At most {settings.STREAMSPACE_SHARE_LINK_MAX_S} seconds."}
                )
            if data.get("may_manage"):
                raise serializers.ValidationError({"may_manage": "A link never manages the session."})
        elif "expires_in_s" in data:
            raise serializers.ValidationError({"expires_in_s": "Only a link expires; revoke a share to end it."})
        return data


class ShareSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=["user", "group", "link"])
    role = serializers.ChoiceField(choices=ShareRole.choices)
    user = serializers.CharField(allow_null=True)
    group = serializers.CharField(allow_null=True)
    may_manage = serializers.BooleanField()
    expires_at = serializers.DateTimeField(allow_null=True)
    created_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    url = serializers.CharField(required=False, help_text="A new link's URL (shown once).")


class SharesSerializer(serializers.Serializer):
    shares = ShareSerializer(many=True)
    connected = serializers.ListField(child=serializers.DictField(), help_text="Open viewer connections now.")


def _shareable_session(request: Request, session_id: Any) -> Session:
    """The session if the caller may manage its shares; 404 if they may not see it, else 403."""
    session = get_object_or_404(session_queryset().visible_to(request.user), pk=session_id)
    if not access.may_share(request.user, session):
        raise Forbidden("Only the session's owner (or an operator) manages its shares.", code="permission_denied")
    return session


def _shares(session: Session) -> list[Share]:
    return list(Share.objects.filter(session=session).select_related("user", "group", "created_by"))


class SessionSharesView(APIView):
    def get_permissions(self) -> list[Any]:
        permissions = super().get_permissions()
        return [*permissions, NotReadScope()] if self.request.method == "POST" else permissions

    @extend_schema(responses=SharesSerializer)
    def get(self, request: Request, session_id: Any) -> Response:
        """The session's shares and links (a link's URL is shown only when it is created) and
        who is connected to it now."""
        session = _shareable_session(request, session_id)
        return Response(
            {
                "shares": [sharing.describe(share) for share in _shares(session)],
                "connected": presence.connected(session.pk),
            }
        )

    @extend_schema(request=ShareCreateSerializer, responses={201: ShareSerializer, 200: ShareSerializer})
    def post(self, request: Request, session_id: Any) -> Response:
        """Share with a user or a group (sharing again changes the role: 200), or create a link
        (201 with its ``url``, the only time the link's key is shown)."""
        session = _shareable_session(request, session_id)
        if not isinstance(request.data, dict):
            raise ServiceError("The body must be a JSON object.", code="invalid")
        body = ShareCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if data.get("link"):
            share, key = sharing.create_link(
                session, role=data["role"], expires_in_s=data["expires_in_s"], actor=request.user, request=request
            )
            url = sharing.link_url(session.pk, key, scheme=request.scheme, host=request.get_host())
            return Response({**sharing.describe(share), "url": url}, status=status.HTTP_201_CREATED)
        if "user" in data:
            recipient = {"user": sharing.resolve_recipient(username=data["user"])}
        else:
            recipient = {"group": sharing.resolve_recipient(group=data["group"])}
        share, created = sharing.grant(
            session, role=data["role"], may_manage=data["may_manage"], actor=request.user, request=request, **recipient
        )
        return Response(sharing.describe(share), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class SessionShareDetailView(APIView):
    permission_classes = [IsAuthenticated, NotReadScope]

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, session_id: Any, share_id: int) -> Response:
        """Revoke a share or link: it stops working at once, open connections included."""
        session = _shareable_session(request, session_id)
        share = get_object_or_404(Share.objects.select_related("session"), pk=share_id, session=session)
        sharing.revoke(share, actor=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)

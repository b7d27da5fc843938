from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents_app import services
from agents_app.api.serializers import AgentCreateSerializer, AgentSerializer
from agents_app.models import Agent
from streamspace.api.permissions import IsAdminRole, IsOperator


class AgentListView(APIView):
    def get_permissions(self):
        return [IsAdminRole()] if self.request.method == "POST" else [IsOperator()]

    @extend_schema(responses=AgentSerializer(many=True))
    def get(self, request: Request) -> Response:
        """Every agent with its replicas: leader, control-plane pod, heartbeat age, sessions."""
        agents = services.with_live_heartbeats(list(Agent.objects.with_replicas_and_counts()))
        return Response(AgentSerializer(agents, many=True).data)

    @extend_schema(
        request=AgentCreateSerializer,
        responses={
            201: inline_serializer("AgentCreated", {"agent": AgentSerializer(), "token": serializers.CharField()})
        },
    )
    def post(self, request: Request) -> Response:
        """Register an agent. The token is in this answer only; it is stored hashed."""
        body = AgentCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        agent, token = services.create_agent(
            data["agent_id"], data["platform"], name=data.get("name", ""), actor=request.user, request=request
        )
        if data["proxy_mode"] != agent.proxy_mode:
            agent.proxy_mode = data["proxy_mode"]
            agent.save(update_fields=["proxy_mode"])
        return Response(
            {"agent": AgentSerializer(Agent.objects.with_replicas_and_counts().get(pk=agent.pk)).data, "token": token},
            status=status.HTTP_201_CREATED,
        )


class AgentDetailView(APIView):
    permission_classes = [IsOperator]

    @extend_schema(responses=AgentSerializer)
    def get(self, request: Request, agent_id: str) -> Response:
        agent = get_object_or_404(Agent.objects.with_replicas_and_counts(), agent_id=agent_id)
        return Response(AgentSerializer(services.with_live_heartbeats([agent])[0]).data)

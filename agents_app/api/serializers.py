from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import serializers

from agents_app.models import Agent, AgentInstance, Platform, ProxyMode
from streamspace.api.strict import StrictFieldsMixin


class AgentInstanceSerializer(serializers.ModelSerializer):
    heartbeat_age_s = serializers.SerializerMethodField()

    class Meta:
        model = AgentInstance
        fields = [
            "instance_id",
            "pod",
            "is_leader",
            "connected",
            "hostname",
            "version",
            "capacity",
            "active_sessions",
            "connected_at",
            "disconnected_at",
            "last_heartbeat",
            "heartbeat_age_s",
        ]

    def get_heartbeat_age_s(self, obj: AgentInstance) -> float | None:
        if obj.last_heartbeat is None:
            return None
        return round((timezone.now() - obj.last_heartbeat).total_seconds(), 1)


class AgentSerializer(serializers.ModelSerializer):
    instances = AgentInstanceSerializer(many=True, read_only=True)
    sessions = serializers.SerializerMethodField()
    pending_commands = serializers.SerializerMethodField()

    class Meta:
        model = Agent
        fields = [
            "agent_id",
            "name",
            "platform",
            "proxy_mode",
            "enabled",
            "token_prefix",
            "created_at",
            "last_seen",
            "instances",
            "sessions",
            "pending_commands",
        ]

    def get_sessions(self, obj: Any) -> int:
        return getattr(obj, "active_session_count", 0)

    def get_pending_commands(self, obj: Any) -> int:
        return getattr(obj, "pending_command_count", 0)


class AgentCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    agent_id = serializers.SlugField(max_length=64)
    platform = serializers.ChoiceField(choices=Platform.choices)
    name = serializers.CharField(max_length=120, required=False, allow_blank=True)
    proxy_mode = serializers.ChoiceField(choices=ProxyMode.choices, required=False, default=ProxyMode.AUTO)

"""Plugin API bodies and representations (secret values are write-only)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from plugins_app import registry, services
from plugins_app.models import Plugin, PluginType, WebhookDelivery
from streamspace.api.strict import StrictFieldsMixin


class PluginCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    name = serializers.SlugField(max_length=64)
    type = serializers.ChoiceField(choices=PluginType.choices)
    config = serializers.DictField(required=False, default=dict)
    display_name = serializers.CharField(max_length=120, required=False, default="", allow_blank=True)
    enabled = serializers.BooleanField(required=False, default=True)


class PluginUpdateSerializer(StrictFieldsMixin, serializers.Serializer):
    config = serializers.DictField(required=False, help_text="Replaces the configuration; omitted secrets are kept.")
    display_name = serializers.CharField(max_length=120, required=False, allow_blank=True)
    enabled = serializers.BooleanField(required=False)


class RedeliverSerializer(StrictFieldsMixin, serializers.Serializer):
    """No fields: an empty body or ``{}``."""


class PluginSerializer(serializers.ModelSerializer):
    config = serializers.SerializerMethodField()
    secret_fields_set = serializers.SerializerMethodField()
    installed_by = serializers.SerializerMethodField()
    available = serializers.SerializerMethodField()

    class Meta:
        model = Plugin
        fields = [
            "id",
            "name",
            "display_name",
            "type",
            "version",
            "enabled",
            "config",
            "events",
            "secret_fields_set",
            "installed_by",
            "available",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_config(self, plugin: Plugin) -> dict[str, Any]:
        return services.public_config(plugin)

    def get_secret_fields_set(self, plugin: Plugin) -> list[str]:
        return services.secret_fields_set(plugin)

    def get_installed_by(self, plugin: Plugin) -> str | None:
        return plugin.installed_by.get_username() if plugin.installed_by_id else None

    def get_available(self, plugin: Plugin) -> dict[str, Any] | None:
        """For extensions: whether the package is present and compatible (else why not)."""
        if plugin.type != PluginType.EXTENSION:
            return None
        item = registry.available().get(plugin.name)
        if item is None:
            return {"ok": False, "error": "the package is not installed"}
        return {"ok": item.ok, "error": item.error}


class AvailableExtensionSerializer(serializers.Serializer):
    name = serializers.CharField()
    ok = serializers.BooleanField()
    error = serializers.CharField()
    distribution = serializers.CharField()
    meta = serializers.DictField()


class DeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "delivery_id",
            "event",
            "attempt",
            "status",
            "response_code",
            "latency_ms",
            "error",
            "manual",
            "next_attempt_at",
            "created_at",
            "completed_at",
            "payload",
        ]
        read_only_fields = fields

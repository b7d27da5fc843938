from __future__ import annotations

import re
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents_app.models import Platform
from sessions_app.models import Session, Template
from sessions_app.placement import CatalogAvailability
from streamspace.api.strict import StrictFieldsMixin

TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}

MAX_CPU = 64_000
MAX_MEMORY = 262_144
MAX_IDLE = 7 * 24 * 3600
FEATURE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


class AvailabilitySerializer(serializers.Serializer):
    """Whether a connected agent can serve the template now (``sessions_app.availability``);
    ``code`` and ``reason`` say why not, with the code a launch would be refused with."""

    available = serializers.BooleanField()
    code = serializers.CharField(allow_blank=True)
    reason = serializers.CharField(allow_blank=True)


class TemplateSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    availability = serializers.SerializerMethodField()

    class Meta:
        model = Template
        fields = [
            "slug",
            "display_name",
            "description",
            "category",
            "icon",
            "image",
            "command",
            "default_cpu_millicores",
            "default_memory_mb",
            "streaming_port",
            "home_path",
            "shm_size_mb",
            "stream_auth",
            "read_only_root",
            "env",
            "volume_mounts",
            "tags",
            "requires",
            "gpu",
            "node_selector",
            "tolerations",
            "idle_timeout_s",
            "enabled",
            "platform",
            "availability",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
        extra_kwargs = {
            "default_cpu_millicores": {"max_value": MAX_CPU},
            "default_memory_mb": {"max_value": MAX_MEMORY},
            "idle_timeout_s": {"max_value": MAX_IDLE},
        }

    def validate_command(self, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(arg, str) and len(arg) <= 4096 for arg in value):
            raise serializers.ValidationError("Must be a list of strings (argv).")
        return value

    def validate_env(self, value: Any) -> dict[str, str]:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and len(v) <= 8192 for k, v in value.items()
        ):
            raise serializers.ValidationError("Must be an object of string values.")
        return value

    def validate_tags(self, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(tag, str) and len(tag) <= 64 for tag in value):
            raise serializers.ValidationError("Must be a list of short strings.")
        return value

    def validate_node_selector(self, value: Any) -> dict[str, str]:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and k and len(k) <= 317 and isinstance(v, str) and len(v) <= 63 for k, v in value.items()
        ):
            raise serializers.ValidationError("Must be an object of label names to string values.")
        return value

    def validate_tolerations(self, value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list) or len(value) > 32:
            raise serializers.ValidationError("Must be a list of at most 32 tolerations.")
        for toleration in value:
            if not isinstance(toleration, dict) or not toleration or set(toleration) - TOLERATION_KEYS:
                raise serializers.ValidationError(
                    f"Each toleration is an object with some of: {', '.join(sorted(TOLERATION_KEYS))}."
                )
            if toleration.get("operator", "Equal") not in ("Equal", "Exists"):
                raise serializers.ValidationError("A toleration's operator is Equal or Exists.")
            if toleration.get("effect", "") not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
                raise serializers.ValidationError("A toleration's effect is NoSchedule, PreferNoSchedule or NoExecute.")
            seconds = toleration.get("tolerationSeconds")
            if seconds is not None and (not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 0):
                raise serializers.ValidationError("tolerationSeconds must be a whole number of seconds.")
            if not all(isinstance(toleration.get(k, ""), str) for k in ("key", "operator", "value", "effect")):
                raise serializers.ValidationError("A toleration's key, operator, value and effect are strings.")
        return value

    def validate_requires(self, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(
            isinstance(name, str) and FEATURE_NAME.fullmatch(name) for name in value
        ):
            raise serializers.ValidationError("Must be a list of feature names (lowercase letters, digits, -).")
        return value

    @extend_schema_field(AvailabilitySerializer)
    def get_availability(self, obj: Template) -> dict[str, Any]:
        """From the request's :class:`~sessions_app.placement.CatalogAvailability` (one query for
        a whole listing); a serializer used without one reads the agents itself."""
        catalog = self.context.get("availability")
        if catalog is None:
            catalog = self.context["availability"] = CatalogAvailability()
        return catalog.of(obj).as_dict()

    def validate_volume_mounts(self, value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise serializers.ValidationError("Must be a list of mounts.")
        for mount in value:
            if not (
                isinstance(mount, dict)
                and isinstance(mount.get("name"), str)
                and isinstance(mount.get("mount_path"), str)
                and mount["mount_path"].startswith("/")
            ):
                raise serializers.ValidationError('Each mount needs "name" and an absolute "mount_path".')
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        platform = attrs.get("platform", getattr(self.instance, "platform", ""))
        image = attrs.get("image", getattr(self.instance, "image", ""))
        command = attrs.get("command", getattr(self.instance, "command", []))
        if platform == Platform.LOCAL and not command:
            raise serializers.ValidationError({"command": "A local template needs a command."})
        if platform != Platform.LOCAL and not image:
            raise serializers.ValidationError({"image": "A container template needs an image."})
        return attrs


class ResourcesSerializer(StrictFieldsMixin, serializers.Serializer):
    cpu_millicores = serializers.IntegerField(min_value=50, max_value=MAX_CPU, required=False)
    memory_mb = serializers.IntegerField(min_value=64, max_value=MAX_MEMORY, required=False)


class SessionCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    template = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=120, required=False, allow_blank=False)
    resources = ResourcesSerializer(required=False)
    persistent_home = serializers.BooleanField(required=False, default=True)
    idle_timeout_s = serializers.IntegerField(min_value=60, max_value=MAX_IDLE, required=False)


class ProgressStepSerializer(serializers.Serializer):
    step = serializers.CharField(help_text="image, workload, stream, ready (or another step an agent names)")
    label = serializers.CharField()
    state = serializers.ChoiceField(choices=["active", "done", "failed"])
    at_s = serializers.FloatField(help_text="When the step began, in seconds since the launch began.")
    duration_s = serializers.FloatField(allow_null=True, help_text="How long it took; null while active.")


@extend_schema_field(ProgressStepSerializer(many=True))
class ProgressField(serializers.JSONField):
    """The launch's steps as stored (``sessions_app.launch_reports.progress_rows``)."""


# The session object of the API: its fields, their order, their types in the schema.
# ``sessions_app.api.representation`` builds every session the API, the portal and the
# notifications send from ``values()`` rows, with the columns and the values it reads off
# these fields, so a field added here is added there. A field this class computes (a
# method or a model property) needs its row form in ``representation.COMPUTED``, which
# refuses to build anything until it has one. (A comment, not a docstring: drf-spectacular
# would publish a docstring as the schema's description of Session.)
class SessionSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)
    template = serializers.CharField(source="template.slug", read_only=True)
    agent_id = serializers.CharField(source="agent.agent_id", read_only=True, allow_null=True)
    resources = serializers.SerializerMethodField()
    viewer_path = serializers.CharField(read_only=True)
    progress = ProgressField(
        source="launch_progress",
        read_only=True,
        help_text="The steps of the latest launch or wake, as the agent reported them, with how long each took.",
    )

    class Meta:
        model = Session
        fields = [
            "id",
            "name",
            "user",
            "template",
            "state",
            "platform",
            "agent_id",
            "resources",
            "persistent_home",
            "idle_timeout_s",
            "streaming_ready",
            "streaming_port",
            "last_activity",
            "created_at",
            "updated_at",
            "state_changed_at",
            "status_message",
            "viewer_path",
            "exit_code",
            "progress",
        ]
        read_only_fields = fields

    def get_resources(self, obj: Session) -> dict[str, int]:
        return session_resources(obj.cpu_millicores, obj.memory_mb)


def session_resources(cpu_millicores: int, memory_mb: int) -> dict[str, int]:
    """A session's ``resources`` object."""
    return {"cpu_millicores": cpu_millicores, "memory_mb": memory_mb}


class SessionLogsSerializer(serializers.Serializer):
    session_id = serializers.UUIDField()
    state = serializers.CharField()
    status_message = serializers.CharField()
    exit_code = serializers.IntegerField(allow_null=True, help_text="The workload's exit status (failed sessions).")
    log_tail = serializers.CharField(
        help_text="The last lines of the workload's output, reported with its failure (at most 8 KiB, secrets masked)."
    )
    log_truncated = serializers.BooleanField(help_text="The tail was cut to fit the bound.")
    captured_at = serializers.DateTimeField(allow_null=True, help_text="When the agent reported the tail.")
    progress = ProgressStepSerializer(many=True)


class ViewerUrlSerializer(serializers.Serializer):
    url = serializers.CharField()
    expires_in = serializers.IntegerField()


class IceServerSerializer(serializers.Serializer):
    urls = serializers.ListField(child=serializers.CharField())
    username = serializers.CharField(required=False)
    credential = serializers.CharField(required=False)


class TurnSerializer(serializers.Serializer):
    iceServers = IceServerSerializer(many=True)
    lifetimeDuration = serializers.CharField()
    expires_at = serializers.IntegerField()


class QuotaLimitsSerializer(StrictFieldsMixin, serializers.Serializer):
    max_sessions = serializers.IntegerField(min_value=0, max_value=10_000, allow_null=True, required=False)
    max_cpu_millicores = serializers.IntegerField(min_value=0, max_value=10_000_000, allow_null=True, required=False)
    max_memory_mb = serializers.IntegerField(min_value=0, max_value=100_000_000, allow_null=True, required=False)

"""Forms of the operator panel. The template form validates through the API's serializer so
the portal and ``/api/v1/templates`` accept exactly the same catalog entries."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms

from sessions_app.api.serializers import TemplateSerializer
from sessions_app.icon_upload import IconUploadForm
from sessions_app.models import Template

JSON_FIELDS = ("command", "env", "volume_mounts", "tags", "requires", "node_selector", "tolerations")


class TemplateForm(IconUploadForm, forms.ModelForm):
    class Meta:
        model = Template
        fields = [
            "slug",
            "display_name",
            "description",
            "category",
            "icon",
            "platform",
            "image",
            "command",
            "default_cpu_millicores",
            "default_memory_mb",
            "streaming_port",
            "home_path",
            "shm_size_mb",
            "stream_auth",
            "read_only_root",
            "idle_timeout_s",
            "env",
            "volume_mounts",
            "tags",
            "requires",
            "gpu",
            "node_selector",
            "tolerations",
            "enabled",
        ]
        widgets = {
            "description": forms.Textarea(attrs={"rows": 3}),
            **{name: forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "mono"}) for name in JSON_FIELDS},
        }
        labels = {
            "default_cpu_millicores": "Default CPU (millicores)",
            "default_memory_mb": "Default memory (MB)",
            "idle_timeout_s": "Idle timeout (seconds)",
            "env": "Environment",
            "home_path": "Home path",
            "shm_size_mb": "/dev/shm size (MiB)",
            "stream_auth": "Takes stream secrets",
            "read_only_root": "Read-only root file system",
        }
        help_texts = {
            "command": 'Local platform only: JSON argv, e.g. ["{python}", "-m", "app", "--port", "{port}"].',
            "env": 'JSON object of strings, e.g. {"LANG": "en_US.UTF-8"}.',
            "volume_mounts": 'JSON list, e.g. [{"name": "data", "mount_path": "/data", "read_only": true}].',
            "tags": 'JSON list of strings, e.g. ["desktop"].',
            "requires": 'Features the agent\'s host must offer, JSON list, e.g. ["desktop"].',
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["gpu"].required = False  # empty means none

    def clean_gpu(self) -> int:
        return self.cleaned_data.get("gpu") or 0

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        data = {name: cleaned.get(name) for name in self.Meta.fields}
        for name in JSON_FIELDS:  # an empty textarea means "none"
            if data[name] is None:
                data[name] = {} if name in ("env", "node_selector") else []
                cleaned[name] = data[name]
        serializer = TemplateSerializer(instance=self.instance if self.instance.pk else None, data=data)
        if not serializer.is_valid():
            for name, problems in serializer.errors.items():
                target = name if name in self.fields else None
                for problem in problems if isinstance(problems, list) else [problems]:
                    self.add_error(target, str(problem))
        return cleaned


class QuotaForm(forms.Form):
    """A user's overrides; an empty field inherits from the groups or the site default."""

    max_sessions = forms.IntegerField(required=False, min_value=0, max_value=1000)
    max_cpu_millicores = forms.IntegerField(
        required=False, min_value=0, max_value=1_000_000, label="Max CPU (millicores)"
    )
    max_memory_mb = forms.IntegerField(required=False, min_value=0, max_value=10_000_000, label="Max memory (MB)")


class UUIDListField(forms.Field):
    """Several ``name=<uuid>`` values (checkboxes); at most ``max_items``."""

    widget = forms.MultipleHiddenInput

    def __init__(self, *, max_items: int = 500, **kwargs: Any) -> None:
        self.max_items = max_items
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> list[uuid.UUID]:
        if not value:
            return []
        if not isinstance(value, list | tuple):
            value = [value]
        if len(value) > self.max_items:
            raise forms.ValidationError(f"Select at most {self.max_items}.")
        try:
            return [uuid.UUID(str(item)) for item in value]
        except ValueError:
            raise forms.ValidationError("Not a session id.") from None


class BulkStopForm(forms.Form):
    sessions = UUIDListField(error_messages={"required": "Select at least one session."})

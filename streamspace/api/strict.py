from __future__ import annotations

from typing import Any

from rest_framework import serializers


class StrictFieldsMixin:
    """Reject bodies with keys the serializer does not know (a typo must not be a silent no-op)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = set(data) - set(self.fields)  # type: ignore[attr-defined]
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in sorted(unknown)[:20]})
        return super().to_internal_value(data)  # type: ignore[misc]

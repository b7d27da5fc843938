"""Small presentation filters for the portal templates."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def age(value: datetime | None) -> str:
    """How long ago, compact and precise for recent times: ``4 s``, ``3 min``, ``2 h``, ``5 d``."""
    if not value:
        return "—"
    seconds = max(0, int((timezone.now() - value).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


@register.filter
def as_json(value: Any) -> str:
    """Compact JSON for showing structured details (audit, deliveries) as users expect."""
    return json.dumps(value, separators=(", ", ": "), sort_keys=True, default=str)


@register.filter
def iso_short(value: Any) -> str:
    """An API ISO 8601 timestamp (``2026-11-27T05:38:01.123Z``) as ``2026-11-27 05:38:01``."""
    if not isinstance(value, str) or len(value) < 19:
        return "—"
    return value[:19].replace("T", " ")

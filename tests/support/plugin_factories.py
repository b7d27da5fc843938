"""Plugin rows for tests (and the API matrix fixtures), created directly."""

from __future__ import annotations

from typing import Any

from plugins_app import secrets
from plugins_app.models import DeliveryStatus, Plugin, WebhookDelivery

SECRET = "whsec-test-0123456789abcdef"


def webhook_plugin(
    url: str = "https://hooks.example.com/streamspace", *, events: Any = None, name: str = "hook"
) -> Plugin:
    events = list(events or ["session.created"])
    plugin = Plugin(name=name, type="webhook", config={"url": url, "events": events}, events=events)
    secrets.write(plugin, {"secret": SECRET})
    plugin.save()
    return plugin


def failed_delivery(plugin: Plugin, event: str = "session.created") -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        plugin=plugin, event=event, payload={"event": event}, status=DeliveryStatus.FAILED, response_code=500
    )


def matrix_targets() -> dict[str, Any]:
    """``{plugin}`` and ``{delivery}`` of tests/support/api_matrix.py."""
    plugin = webhook_plugin()
    return {"plugin": plugin.pk, "delivery": failed_delivery(plugin).delivery_id}

"""How one delivery attempt reaches its target, per plugin type (all outbound HTTP via ``http.py``).

- ``webhook``: the signed JSON POST of docs/architecture.md §12;
- ``integration`` / ``slack``: a Slack-compatible incoming-webhook message (``{"text": ...}``);
- ``integration`` / ``email``: a plain-text mail through Django's e-mail backend.

A sender returns an :class:`Outcome`; network errors are raised and retried by the caller.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.core.serializers.json import DjangoJSONEncoder

from plugins_app import http, signing
from plugins_app.models import Plugin, PluginType, WebhookDelivery


@dataclass(frozen=True)
class Outcome:
    ok: bool
    response_code: int | None = None
    latency_ms: int | None = None
    error: str = ""


def body_bytes(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, keys in a stable order."""
    return json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"), sort_keys=True).encode()


def _http_outcome(response: http.Response) -> Outcome:
    error = "" if response.ok else f"HTTP {response.status_code}: {response.text[:300]}"
    return Outcome(ok=response.ok, response_code=response.status_code, latency_ms=response.latency_ms, error=error)


def send_webhook(plugin: Plugin, delivery: WebhookDelivery, secrets: dict[str, str]) -> Outcome:
    body = body_bytes(delivery.payload)
    headers = {
        "Content-Type": "application/json",
        signing.EVENT_HEADER: delivery.event,
        signing.DELIVERY_HEADER: str(delivery.delivery_id),
        **{str(k): str(v) for k, v in (plugin.config.get("headers") or {}).items()},
    }
    if secrets.get("secret"):
        headers[signing.HEADER] = signing.sign(secrets["secret"], body)
    return _http_outcome(http.post(plugin.config.get("url", ""), body=body, headers=headers))


def summary(payload: dict[str, Any]) -> str:
    """One human line for chat and mail: event, subject and actor."""
    data = payload.get("data") or {}
    session = data.get("session") if isinstance(data.get("session"), dict) else None
    parts = [payload.get("event", "event")]
    if session:
        parts.append(f"session {session.get('name', '')} ({session.get('id', '')}) of {session.get('user', '')}")
        if session.get("status_message"):
            parts.append(f"— {session['status_message']}")
    elif data.get("agent_id"):
        parts.append(f"agent {data['agent_id']}" + (f"/{data['instance_id']}" if data.get("instance_id") else ""))
    elif data.get("username"):
        parts.append(f"user {data['username']}")
    elif data.get("limit"):
        parts.append(f"limit {data['limit']}")
    if payload.get("actor"):
        parts.append(f"by {payload['actor']}")
    return " ".join(str(p) for p in parts if p)


def send_slack(plugin: Plugin, delivery: WebhookDelivery, secrets: dict[str, str]) -> Outcome:
    message: dict[str, Any] = {
        "text": f"[{getattr(settings, 'STREAMSPACE_PRODUCT_NAME', 'StreamSpace')}] {summary(delivery.payload)}"
    }
    for key in ("channel", "username"):
        if plugin.config.get(key):
            message[key] = plugin.config[key]
    body = json.dumps(message).encode()
    return _http_outcome(http.post(secrets.get("url", ""), body=body, headers={"Content-Type": "application/json"}))


def send_email(plugin: Plugin, delivery: WebhookDelivery, secrets: dict[str, str]) -> Outcome:
    prefix = plugin.config.get("subject_prefix", "[StreamSpace]")
    text = summary(delivery.payload)
    body = f"{text}\n\nEvent: {delivery.event}\nDelivery: {delivery.delivery_id}\n\n" + json.dumps(
        delivery.payload, cls=DjangoJSONEncoder, indent=2, sort_keys=True
    )
    sent = send_mail(f"{prefix} {text}"[:200], body, None, list(plugin.config["to"]), fail_silently=False)
    return Outcome(ok=bool(sent), error="" if sent else "the mail backend sent nothing")


def send(plugin: Plugin, delivery: WebhookDelivery, secrets: dict[str, str]) -> Outcome:
    """Make one attempt of ``delivery`` with the sender of ``plugin``'s type."""
    if plugin.type == PluginType.WEBHOOK:
        return send_webhook(plugin, delivery, secrets)
    if plugin.type == PluginType.INTEGRATION and plugin.config.get("kind") == "slack":
        return send_slack(plugin, delivery, secrets)
    if plugin.type == PluginType.INTEGRATION and plugin.config.get("kind") == "email":
        return send_email(plugin, delivery, secrets)
    return Outcome(ok=False, error=f"a {plugin.type} plugin does not deliver events")

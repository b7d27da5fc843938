"""Plugins as event-bus subscribers: deliveries for webhooks and integrations, handlers for extensions."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from plugins_app import delivery, registry, theme

log = logging.getLogger(__name__)


def on_event(envelope: dict[str, Any]) -> None:
    """Subscribed to ``streamspace.events`` when the app is ready."""
    try:
        delivery.queue_event(envelope)
    except Exception:  # an event must never fail the change that emitted it
        log.exception("could not queue deliveries for %s", envelope.get("event"))
    registry.dispatch_event(envelope)


def plugins_changed(**_: Any) -> None:
    """A plugin row was saved or deleted: drop every cache of plugin rows, now and on commit."""
    for invalidate in (delivery.invalidate, registry.invalidate, theme.invalidate):
        invalidate()
        transaction.on_commit(invalidate)

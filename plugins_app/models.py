"""Plugins and the log of webhook deliveries (docs/architecture.md §12)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class PluginType(models.TextChoices):
    EXTENSION = "extension"
    WEBHOOK = "webhook"
    INTEGRATION = "integration"
    THEME = "theme"


class Plugin(models.Model):
    name = models.SlugField(max_length=64, unique=True)
    display_name = models.CharField(max_length=120, blank=True)
    type = models.CharField(max_length=16, choices=PluginType.choices)
    version = models.CharField(max_length=32, blank=True)
    enabled = models.BooleanField(default=True, db_index=True)
    config = models.JSONField(default=dict, blank=True, help_text="Non-secret configuration.")
    # Secret values (webhook secret, SMTP password...) encrypted at rest with a key from settings.
    secrets_encrypted = models.TextField(blank=True)
    events = models.JSONField(default=list, blank=True, help_text="Subscribed event names; empty = none.")
    installed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.type})"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # waiting for ``next_attempt_at``
    SENDING = "sending"  # claimed by a worker until ``claimed_until``
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookDelivery(models.Model):
    """One delivery attempt. Retries of one event share ``delivery_id``.

    An attempt row is created ``pending``; a worker claims it (``sending`` until
    ``claimed_until``), then records the outcome and, after a failure, creates the next
    attempt's row. A worker killed mid-attempt leaves a claim that expires, and the
    attempt is made again with the same ``delivery_id`` (receivers de-duplicate on it).
    """

    delivery_id = models.UUIDField(default=uuid.uuid4, db_index=True)
    plugin = models.ForeignKey(Plugin, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    attempt = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True, help_text="Last handed to the task queue.")
    manual = models.BooleanField(default=False, help_text="A redelivery asked for by an admin (not retried).")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-attempt"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due")]

    def __str__(self) -> str:
        return f"{self.event} -> {self.plugin.name} #{self.attempt} ({self.status})"

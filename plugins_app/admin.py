"""Django admin for plugins: validated configuration, enable/disable, delivery log, redeliver."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages

from plugins_app import delivery, services
from plugins_app.models import Plugin, WebhookDelivery
from streamspace.api.errors import ServiceError


class PluginForm(forms.ModelForm):
    """Configuration goes through the same validation as the API; secrets are write-only."""

    new_secrets = forms.JSONField(
        required=False,
        help_text='Secret values to set, e.g. {"secret": "..."} for a webhook or {"url": "..."} for Slack. '
        "Leave empty to keep the stored ones (never shown).",
    )

    class Meta:
        model = Plugin
        fields = ["name", "display_name", "type", "enabled", "config"]

    def full_config(self) -> dict[str, Any]:
        return {**(self.cleaned_data.get("config") or {}), **(self.cleaned_data.get("new_secrets") or {})}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        existing = self.instance if self.instance.pk else None
        plugin_type = existing.type if existing else cleaned.get("type")
        name = existing.name if existing else cleaned.get("name")
        if plugin_type and name and not self.errors:
            try:
                services.check_config(plugin_type, name, self.full_config(), existing=existing)
            except ServiceError as exc:
                raise forms.ValidationError(exc.detail) from exc
        return cleaned


class DeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ["-created_at", "-attempt"]
    fields = ["created_at", "event", "delivery_id", "attempt", "status", "response_code", "latency_ms", "error"]
    readonly_fields = fields
    show_change_link = True

    def get_queryset(self, request: Any):
        return super().get_queryset(request).order_by("-created_at")


@admin.register(Plugin)
class PluginAdmin(admin.ModelAdmin):
    form = PluginForm
    list_display = ("name", "type", "version", "enabled", "updated_at")
    list_filter = ("type", "enabled")
    search_fields = ("name", "display_name")
    readonly_fields = ("version", "events", "installed_by", "created_at", "updated_at")
    inlines = [DeliveryInline]
    actions = ["enable", "disable"]

    def get_readonly_fields(self, request: Any, obj: Plugin | None = None) -> tuple[str, ...]:
        # name and type are fixed once installed
        return (*self.readonly_fields, "name", "type") if obj else self.readonly_fields

    def save_model(self, request: Any, obj: Plugin, form: PluginForm, change: bool) -> None:
        """Through the services (validated in ``PluginForm.clean``), so the change is audited."""
        if change:
            saved = services.update_plugin(
                Plugin.objects.get(pk=obj.pk),
                config=form.full_config(),
                display_name=obj.display_name,
                enabled=obj.enabled,
                actor=request.user,
                request=request,
            )
        else:
            saved = services.install_plugin(
                name=obj.name,
                type=obj.type,
                config=form.full_config(),
                display_name=obj.display_name,
                enabled=obj.enabled,
                actor=request.user,
                request=request,
            )
        obj.pk, obj.config = saved.pk, saved.config

    def delete_model(self, request: Any, obj: Plugin) -> None:
        services.remove_plugin(obj, actor=request.user, request=request)

    @admin.action(description="Enable selected plugins")
    def enable(self, request: Any, queryset: Any) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected plugins")
    def disable(self, request: Any, queryset: Any) -> None:
        self._set_enabled(request, queryset, False)

    def _set_enabled(self, request: Any, queryset: Any, enabled: bool) -> None:
        for plugin in queryset:
            try:
                services.update_plugin(plugin, enabled=enabled, actor=request.user, request=request)
            except ServiceError as exc:
                self.message_user(request, f"{plugin.name}: {exc.detail}", messages.ERROR)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "plugin", "event", "attempt", "status", "response_code", "latency_ms", "manual")
    list_filter = ("status", "event", "manual", "plugin")
    search_fields = ("delivery_id",)
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields if f.name != "payload"] + ["payload_json"]
    exclude = ("payload",)
    actions = ["redeliver"]

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    @admin.display(description="payload")
    def payload_json(self, obj: WebhookDelivery) -> str:
        return json.dumps(obj.payload, indent=2, sort_keys=True)

    @admin.action(description="Redeliver the selected events (a new attempt, same delivery id)")
    def redeliver(self, request: Any, queryset: Any) -> None:
        done, refused = 0, 0
        seen: set[Any] = set()
        for attempt in queryset.select_related("plugin"):
            if attempt.delivery_id in seen:
                continue
            seen.add(attempt.delivery_id)
            try:
                delivery.redeliver(attempt.plugin, attempt.delivery_id, actor=request.user)
                done += 1
            except delivery.RedeliveryRefused:
                refused += 1
        if done:
            self.message_user(request, f"{done} event(s) queued for redelivery.", messages.SUCCESS)
        if refused:
            self.message_user(request, f"{refused} event(s) still have a pending attempt.", messages.WARNING)

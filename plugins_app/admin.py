from django.contrib import admin

from plugins_app.models import Plugin, WebhookDelivery


@admin.register(Plugin)
class PluginAdmin(admin.ModelAdmin):
    list_display = ("name", "type", "version", "enabled", "updated_at")
    list_filter = ("type", "enabled")
    search_fields = ("name", "display_name")
    exclude = ("secrets_encrypted",)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "plugin", "event", "attempt", "status", "response_code", "latency_ms")
    list_filter = ("status", "event")
    search_fields = ("delivery_id",)
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]

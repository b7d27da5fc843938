import json

from django.contrib import admin, messages

from agent_runtime.protocol import redacted_spec
from agents_app.models import Agent, AgentCommand, AgentInstance
from agents_app.tokens import hash_token, new_token


class AgentInstanceInline(admin.TabularInline):
    model = AgentInstance
    extra = 0
    readonly_fields = (
        "instance_id",
        "pod",
        "is_leader",
        "connected",
        "hostname",
        "version",
        "active_sessions",
        "last_heartbeat",
        "connected_at",
        "disconnected_at",
    )
    exclude = ("channel_name", "capacity")
    can_delete = False


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("agent_id", "platform", "proxy_mode", "enabled", "last_seen", "created_at")
    list_filter = ("platform", "enabled", "proxy_mode")
    search_fields = ("agent_id", "name")
    readonly_fields = ("token_prefix", "created_at", "last_seen")
    exclude = ("token_hash",)
    inlines = [AgentInstanceInline]

    def save_model(self, request, obj, form, change):
        if not change:
            token = new_token()
            obj.token_hash, obj.token_prefix = hash_token(token), token[:8]
            messages.warning(request, f"Agent token for {obj.agent_id} (shown this once): {token}")
        super().save_model(request, obj, form, change)


@admin.register(AgentInstance)
class AgentInstanceAdmin(admin.ModelAdmin):
    list_display = ("agent", "instance_id", "pod", "is_leader", "connected", "last_heartbeat")
    list_filter = ("connected", "is_leader")


@admin.register(AgentCommand)
class AgentCommandAdmin(admin.ModelAdmin):
    list_display = ("created_at", "agent", "action", "session", "state", "attempts", "instance_id")
    list_filter = ("state", "action")
    search_fields = ("id", "session__id")
    raw_id_fields = ("session",)
    # A start or wake spec carries the session's stream secrets: shown masked, never editable.
    exclude = ("spec",)
    readonly_fields = ("shown_spec",)

    @admin.display(description="spec")
    def shown_spec(self, obj: AgentCommand) -> str:
        return json.dumps(redacted_spec(obj.spec or {}), indent=1, sort_keys=True)

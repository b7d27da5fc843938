from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.models import Group

from sessions_app import sharing
from sessions_app.icon_upload import IconUploadForm
from sessions_app.models import GroupQuota, Session, SessionLog, SessionPeriod, Share, Template, UserQuota


class TemplateAdminForm(IconUploadForm, forms.ModelForm):
    class Meta:
        model = Template
        fields = "__all__"


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    form = TemplateAdminForm
    list_display = ("display_name", "slug", "category", "platform", "image", "enabled")
    list_filter = ("enabled", "category", "platform")
    search_fields = ("slug", "display_name", "description")
    prepopulated_fields = {"slug": ("display_name",)}


class ShareInline(admin.TabularInline):
    """The session's shares, shown read-only: they are granted and revoked through the API or
    the portal, which audit each change and close what a revocation ends (sessions_app.sharing)."""

    model = Share
    extra = 0
    can_delete = False
    fields = ("role", "user", "group", "may_manage", "expires_at", "created_by", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "name",
        "user",
        "template",
        "state",
        "agent",
        "streaming_ready",
        "last_activity",
        "created_at",
    )
    list_filter = ("state", "platform", "streaming_ready")
    search_fields = ("id", "name", "user__username")
    list_select_related = ("user", "template", "agent")
    raw_id_fields = ("user",)
    inlines = [ShareInline]
    # State changes go through the state machine (services), not through this form.
    readonly_fields = (
        "state",
        "state_changed_at",
        "streaming_ready",
        "streaming_port",
        "endpoint",
        "exit_code",
        "launch_progress",
        "created_at",
        "updated_at",
    )


@admin.register(Share)
class ShareAdmin(admin.ModelAdmin):
    """Every share, read-only; deleting one revokes it as the API does (audited, open
    connections closed: sessions_app.sharing.revoke)."""

    list_display = ("session", "role", "user", "group", "may_manage", "expires_at", "created_by", "created_at")
    list_filter = ("role", "may_manage")
    search_fields = ("session__id", "user__username", "group__name")
    list_select_related = ("session", "user", "group", "created_by")
    readonly_fields = ("session", "role", "user", "group", "may_manage", "expires_at", "created_by", "created_at")
    exclude = ("link_digest",)

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def delete_model(self, request: Any, obj: Share) -> None:
        sharing.revoke(obj, actor=request.user, request=request)

    def delete_queryset(self, request: Any, queryset: Any) -> None:
        for share in queryset.select_related("session"):
            sharing.revoke(share, actor=request.user, request=request)


@admin.register(SessionLog)
class SessionLogAdmin(admin.ModelAdmin):
    """Output tails as agents reported them with failures (masked); read-only."""

    list_display = ("session", "captured_at", "truncated")
    raw_id_fields = ("session",)
    readonly_fields = ("session", "text", "truncated", "captured_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UserQuota)
class UserQuotaAdmin(admin.ModelAdmin):
    list_display = ("user", "max_sessions", "max_cpu_millicores", "max_memory_mb")
    search_fields = ("user__username",)
    raw_id_fields = ("user",)


class GroupQuotaInline(admin.StackedInline):
    model = GroupQuota
    can_delete = True
    extra = 0
    max_num = 1


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(DjangoGroupAdmin):
    inlines = [GroupQuotaInline]


@admin.register(GroupQuota)
class GroupQuotaAdmin(admin.ModelAdmin):
    list_display = ("group", "max_sessions", "max_cpu_millicores", "max_memory_mb", "idle_timeout_s")


@admin.register(SessionPeriod)
class SessionPeriodAdmin(admin.ModelAdmin):
    """The state history, read only: it is written by state changes (sessions_app.history)."""

    list_display = ("session", "user", "template", "state", "started_at", "ended_at", "cpu_millicores", "memory_mb")
    list_filter = ("state",)
    search_fields = ("session__id", "user__username", "template__slug")
    list_select_related = ("session", "user", "template")
    date_hierarchy = "started_at"

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

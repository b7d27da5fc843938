"""Admin for the audit log, and the hook that copies every admin change into it.

Django's admin writes a ``LogEntry`` for each addition, change and deletion. Every registered
``ModelAdmin`` is given :class:`AuditedAdminMixin` at start-up (``AuditConfig.ready``), so
each of those entries also becomes an ``AuditEvent`` (``admin.add``/``admin.change``/
``admin.delete``) with the request's address and user agent — including bulk deletions,
which Django logs with ``bulk_create`` and no signals.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry

from streamspace.audit.models import AuditEvent
from streamspace.audit.services import record

_ACTIONS = {ADDITION: "admin.add", CHANGE: "admin.change", DELETION: "admin.delete"}


class AuditedAdminMixin:
    """Mirrors the admin's ``LogEntry`` rows into the audit log."""

    def _audit(self, request: Any, entries: Any) -> None:
        if entries is None:
            return
        for entry in entries if isinstance(entries, list | tuple) else [entries]:
            if not isinstance(entry, LogEntry):
                continue
            try:
                change = json.loads(entry.change_message) if entry.change_message else []
            except ValueError:
                change = entry.change_message
            record(
                _ACTIONS.get(entry.action_flag, "admin.change"),
                actor=request.user,
                target_type=entry.content_type.model if entry.content_type_id else "",
                target_id=entry.object_id or "",
                request=request,
                details={"object": entry.object_repr, "change": change},
            )

    def log_addition(self, request: Any, obj: Any, message: Any) -> Any:
        entry = super().log_addition(request, obj, message)  # type: ignore[misc]
        self._audit(request, entry)
        return entry

    def log_change(self, request: Any, obj: Any, message: Any) -> Any:
        entry = super().log_change(request, obj, message)  # type: ignore[misc]
        self._audit(request, entry)
        return entry

    def log_deletions(self, request: Any, queryset: Any) -> Any:
        entries = super().log_deletions(request, queryset)  # type: ignore[misc]
        self._audit(request, list(entries) if entries is not None else None)
        return entries


def audit_admin_site(site: admin.AdminSite) -> None:
    """Give every ``ModelAdmin`` registered on ``site`` the audit mixin (idempotent)."""
    for model_admin in list(site._registry.values()):
        cls = type(model_admin)
        if issubclass(cls, AuditedAdminMixin):
            continue
        model_admin.__class__ = type(f"Audited{cls.__name__}", (AuditedAdminMixin, cls), {"__module__": cls.__module__})


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "actor_repr", "action", "target_type", "target_id", "ip")
    list_filter = ("action", "target_type")
    search_fields = ("actor_repr", "target_id", "action")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

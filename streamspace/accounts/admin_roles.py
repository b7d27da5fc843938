"""Role-based rights in the Django admin (docs/roles.md).

Admins are superusers and may do everything. Operators (``is_staff``) see only the platform
models below, with the listed rights — matching what the API lets them do; everything else
(users, plugins, audit, tokens, quotas changes) stays admin-only. Users never reach the admin.
Every registered ``ModelAdmin`` gets :class:`RoleAdminMixin` at start-up.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin

ALL = frozenset({"view", "add", "change", "delete"})
OPERATOR_ADMIN_RIGHTS: dict[str, frozenset[str]] = {
    "sessions_app.template": ALL,
    "sessions_app.session": frozenset({"view", "change", "delete"}),
    "sessions_app.sessionlog": frozenset({"view"}),
    "sessions_app.share": frozenset({"view", "delete"}),  # operators may revoke shares (docs/roles.md)
    "sessions_app.userquota": frozenset({"view"}),
    "sessions_app.groupquota": frozenset({"view"}),
    "agents_app.agent": frozenset({"view"}),
    "agents_app.agentinstance": frozenset({"view"}),
    "agents_app.agentcommand": frozenset({"view"}),
}


def operator_may(model: Any, right: str) -> bool:
    return right in OPERATOR_ADMIN_RIGHTS.get(model._meta.label_lower, frozenset())


class RoleAdminMixin:
    """Admins: the ModelAdmin's own rules. Operators: ``OPERATOR_ADMIN_RIGHTS``. Others: nothing.

    Operators have no Django model permissions, so the map is the whole rule for them; the
    models it opens have no read-only overrides that the map would widen.
    """

    def _operator_rule(self, request: Any, right: str) -> bool | None:
        user = request.user
        if getattr(user, "is_admin_role", False):
            return None  # defer to the ModelAdmin (admins are superusers)
        return bool(getattr(user, "is_operator", False)) and operator_may(self.model, right)  # type: ignore[attr-defined]

    def has_module_permission(self, request: Any) -> bool:
        rule = self._operator_rule(request, "view")
        return super().has_module_permission(request) if rule is None else rule  # type: ignore[misc]

    def has_view_permission(self, request: Any, obj: Any = None) -> bool:
        rule = self._operator_rule(request, "view")
        return super().has_view_permission(request, obj) if rule is None else rule  # type: ignore[misc]

    def has_add_permission(self, request: Any, *args: Any) -> bool:
        rule = self._operator_rule(request, "add")
        return super().has_add_permission(request, *args) if rule is None else rule  # type: ignore[misc]

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        rule = self._operator_rule(request, "change")
        return super().has_change_permission(request, obj) if rule is None else rule  # type: ignore[misc]

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        rule = self._operator_rule(request, "delete")
        return super().has_delete_permission(request, obj) if rule is None else rule  # type: ignore[misc]


def apply_roles(site: admin.AdminSite) -> None:
    """Give every ``ModelAdmin`` on ``site`` the role rules (idempotent)."""
    for model_admin in list(site._registry.values()):
        cls = type(model_admin)
        if not issubclass(cls, RoleAdminMixin):
            model_admin.__class__ = type(f"Roled{cls.__name__}", (RoleAdminMixin, cls), {"__module__": cls.__module__})

"""Role checks shared by every API (roles: admin, operator, user)."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission


def is_operator(user: Any) -> bool:
    return bool(user and user.is_authenticated and getattr(user, "is_operator", False))


def is_admin(user: Any) -> bool:
    return bool(user and user.is_authenticated and getattr(user, "is_admin_role", False))


class IsOperator(BasePermission):
    """Operators and admins."""

    message = "This needs the operator or admin role."

    def has_permission(self, request: Any, view: Any) -> bool:
        return is_operator(request.user)


class IsAdminRole(BasePermission):
    """Admins only."""

    message = "This needs the admin role."

    def has_permission(self, request: Any, view: Any) -> bool:
        return is_admin(request.user)


class ReadAnyWriteOperator(BasePermission):
    """Any signed-in user may read; operators and admins may write."""

    message = "Changing this needs the operator or admin role."

    def has_permission(self, request: Any, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or is_operator(request.user)


class NotReadScope(BasePermission):
    """Refuses a ``read``-scoped API token even on a safe method.

    For GETs that hand out a credential able to change something: a viewer URL's token lets
    its bearer type and click inside the session, which a read token must not be able to do.
    JWTs, the portal's cookie and ``write``/``admin`` tokens pass.
    """

    message = "This token has the read scope: a viewer can act inside the session, which needs the write scope."

    def has_permission(self, request: Any, view: Any) -> bool:
        return getattr(request.user, "api_token_scope", None) != "read"

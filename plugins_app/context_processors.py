"""Template context from plugins: ``plugin_menu``, the extensions' menu entries (lazy: no query unless used)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from plugins_app import registry


def menu(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    return {"plugin_menu": SimpleLazyObject(lambda: registry.menu_entries(user))}

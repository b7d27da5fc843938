"""Template context from plugins: ``plugin_theme`` and ``plugin_menu`` (lazy: no query unless used)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from plugins_app import registry
from plugins_app.theme import current_theme


def theme(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    return {
        "plugin_theme": SimpleLazyObject(current_theme),
        "plugin_menu": SimpleLazyObject(lambda: registry.menu_entries(user)),
    }

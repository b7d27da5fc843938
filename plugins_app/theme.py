"""The active theme plugin's values, for the portal (``streamspace/portal/theme.py``).

:func:`current_theme` returns ``{"product_name", "logo_url", "colors"}`` from the enabled
``theme`` plugin most recently changed, or the defaults (``StreamSpace``, no logo, no
colour overrides) when there is none. The result is cached
(``STREAMSPACE_THEME_CACHE_S``) and dropped whenever a plugin changes.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.cache import cache

CACHE_KEY = "plugins:theme"
DEFAULT = {"product_name": "StreamSpace", "logo_url": "", "colors": {}}


def _load() -> dict[str, Any]:
    from plugins_app.models import Plugin, PluginType

    plugin = Plugin.objects.filter(type=PluginType.THEME, enabled=True).order_by("-updated_at", "name").first()
    if plugin is None:
        return dict(DEFAULT)
    config = plugin.config or {}
    return {
        "product_name": config.get("product_name") or DEFAULT["product_name"],
        "logo_url": config.get("logo_url") or "",
        "colors": dict(config.get("colors") or {}),
        "plugin": plugin.name,
    }


def current_theme() -> dict[str, Any]:
    """The active theme dict (cached)."""
    theme = cache.get(CACHE_KEY)
    if theme is None:
        theme = _load()
        cache.set(CACHE_KEY, theme, settings.STREAMSPACE_THEME_CACHE_S)
    return theme


def invalidate() -> None:
    cache.delete(CACHE_KEY)

"""The portal's look: product name, logo and colours, set by the enabled ``theme`` plugin.

:func:`current_theme` applies the values of the enabled ``theme`` plugin most recently
changed over the defaults (``StreamSpace``, the stock logo, ``DEFAULT_COLORS``); with no
such plugin the defaults alone apply, and so does each default a plugin leaves out or sets
to something unusable. The plugin's values are cached (``STREAMSPACE_THEME_CACHE_S``) and
dropped whenever a plugin changes (``plugins_app.bus``).

Colour values end up inside a ``<style>`` block, so only plain CSS colour syntax passes
:attr:`Theme.css_variables`, whatever reached the row (the plugin API's schema checks the
same on install, the admin and the ORM do not).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from plugins_app.models import Plugin, PluginType
from streamspace.shared_cache import shared_cache

CACHE_KEY = "plugins:theme"
PRODUCT_NAME = "StreamSpace"
DEFAULT_COLORS: dict[str, str] = {
    "primary": "#2457c5",
    "primary-contrast": "#ffffff",
    "accent": "#0f7b6c",
    "bg": "#f4f6fa",
    "surface": "#ffffff",
    "text": "#1b2230",
    "muted": "#5a6475",
    "border": "#d5dbe5",
    "danger": "#b42318",
    "warning": "#8a5a00",
    "success": "#1a7f37",
    "header-bg": "#152238",
    "header-text": "#ffffff",
}

# #rgb, #rrggbb(aa), rgb()/rgba()/hsl()/hsla() with plain numbers, or a bare colour keyword.
_COLOR = re.compile(r"^(#[0-9a-fA-F]{3,8}|(rgb|rgba|hsl|hsla)\([0-9.,%\s/]+\)|[a-zA-Z]{3,20})$")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


@dataclass(frozen=True)
class Theme:
    product_name: str = PRODUCT_NAME
    logo_url: str = ""
    colors: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_COLORS))

    @property
    def css_variables(self) -> list[tuple[str, str]]:
        """``(name, value)`` pairs for ``--ss-<name>: <value>``; invalid entries are dropped."""
        return [(k, v) for k, v in self.colors.items() if _NAME.match(k) and _COLOR.match(v.strip())]


def _plugin_values() -> dict[str, Any]:
    """The enabled theme plugin's configuration (``{}`` without one): what the cache holds."""
    plugin = Plugin.objects.filter(type=PluginType.THEME, enabled=True).order_by("-updated_at", "name").first()
    return plugin.config if plugin is not None and isinstance(plugin.config, dict) else {}


def theme_from(values: dict[str, Any]) -> Theme:
    """A theme plugin's configuration over the defaults."""
    colors = dict(DEFAULT_COLORS)
    plugin_colors = values.get("colors")
    if isinstance(plugin_colors, dict):
        colors.update({str(k).replace("_", "-"): str(v) for k, v in plugin_colors.items()})
    name, logo = values.get("product_name"), values.get("logo_url")
    return Theme(product_name=str(name) if name else PRODUCT_NAME, logo_url=str(logo) if logo else "", colors=colors)


def current_theme() -> Theme:
    """The active theme (the plugin's values are cached between calls)."""
    values = shared_cache().get(CACHE_KEY)
    if values is None:
        values = _plugin_values()
        shared_cache().set(CACHE_KEY, values, settings.STREAMSPACE_THEME_CACHE_S)
    return theme_from(values)


def invalidate() -> None:
    shared_cache().delete(CACHE_KEY)

"""The portal's look: product name, logo and colours.

A ``theme`` plugin (helper module ``plugins_app.theme``) may override any of these; until one
is installed (or when it fails), the defaults below apply so every page renders.
Colour values end up inside a ``<style>`` block, so only plain CSS colour syntax passes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

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
    product_name: str = "StreamSpace"
    logo_url: str = ""
    colors: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_COLORS))

    @property
    def css_variables(self) -> list[tuple[str, str]]:
        """``(name, value)`` pairs for ``--ss-<name>: <value>``; invalid entries are dropped."""
        return [(k, v) for k, v in self.colors.items() if _NAME.match(k) and _COLOR.match(v.strip())]


def _from_plugin() -> Any:
    try:
        from plugins_app.theme import current_theme
    except ImportError:
        return None
    try:
        return current_theme()
    except Exception:  # a broken theme must never take the portal down
        log.exception("theme plugin failed; using the default theme")
        return None


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def current_theme() -> Theme:
    """The active theme: the theme plugin's values over the defaults."""
    plugin = _from_plugin()
    if not plugin:
        return Theme()
    colors = dict(DEFAULT_COLORS)
    plugin_colors = _get(plugin, "colors")
    if isinstance(plugin_colors, dict):
        colors.update({str(k).replace("_", "-"): str(v) for k, v in plugin_colors.items()})
    name = _get(plugin, "product_name")
    logo = _get(plugin, "logo_url")
    return Theme(
        product_name=str(name) if name else Theme.product_name,
        logo_url=str(logo) if logo else "",
        colors=colors,
    )

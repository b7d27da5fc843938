"""Extension discovery (entry-point group ``streamspace.plugins``) and the hooks' dispatch.

An extension found here is *available*; it is active once installed (a ``Plugin`` row of
type ``extension`` with the same name) and enabled. Incompatible or broken packages are
reported by :func:`available` with the reason and never loaded into the hooks.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

import streamspace
from plugins_app import schemas
from plugins_app.extension import Extension
from plugins_app.models import Plugin, PluginType
from streamspace import events
from streamspace.shared_cache import shared_cache

log = logging.getLogger(__name__)

GROUP = "streamspace.plugins"
ACTIVE_CACHE_KEY = "plugins:active-extensions"


@dataclass
class Available:
    name: str
    extension: Extension | None
    distribution: str = ""
    error: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.extension is not None and not self.error


def _load(ep: Any) -> Available:
    dist = getattr(getattr(ep, "dist", None), "name", "") or ""
    try:
        obj = ep.load()
        extension = obj() if isinstance(obj, type) else obj
    except Exception as exc:
        log.exception("extension %s failed to load", ep.name)
        return Available(ep.name, None, dist, f"failed to load: {exc}")
    if not isinstance(extension, Extension):
        return Available(ep.name, None, dist, "the entry point is not a plugins_app.extension.Extension")
    name = extension.name or ep.name
    meta = {
        "display_name": extension.display_name or name,
        "version": extension.version,
        "requires_streamspace": extension.requires_streamspace,
        "default_settings": dict(extension.default_settings),
        "config_schema": extension.config_schema,
    }
    try:
        spec = SpecifierSet(extension.requires_streamspace or "")
    except InvalidSpecifier:
        return Available(name, None, dist, f"invalid version bounds {extension.requires_streamspace!r}", meta)
    if not spec.contains(Version(streamspace.__version__), prereleases=True):
        error = f"needs StreamSpace {spec}, this is {streamspace.__version__}"
        return Available(name, None, dist, error, meta)
    try:
        schemas.check_schema(extension.config_schema)
    except Exception as exc:
        return Available(name, None, dist, f"invalid config schema: {exc}", meta)
    bad_defaults = schemas.errors(extension.config_schema, dict(extension.default_settings))
    if bad_defaults:
        return Available(name, None, dist, "default settings do not match the schema: " + "; ".join(bad_defaults), meta)
    return Available(name, extension, dist, "", meta)


@functools.cache
def available() -> dict[str, Available]:
    """Every extension registered in the entry-point group, loaded once per process."""
    found: dict[str, Available] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        item = _load(ep)
        if item.name in found:
            log.error("two extensions are named %s; keeping the first", item.name)
            continue
        found[item.name] = item
    return found


def extension(name: str) -> Extension | None:
    item = available().get(name)
    return item.extension if item and item.ok else None


def active() -> dict[str, dict[str, Any]]:
    """Installed, enabled and loadable extensions: name -> effective config (cached)."""
    cached = events.shared(ACTIVE_CACHE_KEY, lambda: shared_cache().get(ACTIVE_CACHE_KEY))
    if cached is not None:
        return cached
    result = {}
    for name, config in Plugin.objects.filter(type=PluginType.EXTENSION, enabled=True).values_list("name", "config"):
        ext = extension(name)
        if ext is not None:
            result[name] = {**ext.default_settings, **(config or {})}
    shared_cache().set(ACTIVE_CACHE_KEY, result, 60)
    return result


def invalidate() -> None:
    """Forget the cached set of active extensions (after a plugin is saved or removed)."""
    shared_cache().delete(ACTIVE_CACHE_KEY)


def is_active(name: str) -> bool:
    return name in active()


def dispatch_event(envelope: dict[str, Any]) -> int:
    """Call ``handle_event`` of every active extension subscribed to the event."""
    called = 0
    for name, config in active().items():
        ext = extension(name)
        if ext is None or (ext.events and envelope["event"] not in ext.events):
            continue
        try:
            ext.handle_event(envelope, config)
            called += 1
        except Exception:
            log.exception("extension %s failed on %s", name, envelope["event"])
    return called


def menu_entries(user: Any) -> list[dict[str, str]]:
    """Portal menu entries of the active extensions for ``user`` (``label``, ``url``, ``plugin``)."""
    entries: list[dict[str, str]] = []
    if user is None or not getattr(user, "is_authenticated", False):
        return entries
    for name, config in active().items():
        ext = extension(name)
        if ext is None:
            continue
        try:
            for entry in ext.menu_entries(user, config) or []:
                if isinstance(entry, dict) and entry.get("label") and entry.get("url"):
                    entries.append(
                        {
                            "label": str(entry["label"]),
                            "url": str(entry["url"]),
                            "icon": str(entry.get("icon", "")),
                            "plugin": name,
                        }
                    )
        except Exception:
            log.exception("extension %s failed to build menu entries", name)
    return entries

"""Mounting extension routes under ``/api/v1/plugins/<name>/``.

Routes of every available extension are mounted at startup (URLconfs are static), and each
DRF view is wrapped so that it answers 404 while its plugin is not installed or disabled —
after authentication, so anonymous callers still get 401.
"""

from __future__ import annotations

import logging
from typing import Any

from django.urls import URLPattern, URLResolver, include, path
from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission

from plugins_app import registry

log = logging.getLogger(__name__)


def _active_permission(name: str) -> type[BasePermission]:
    class PluginActive(BasePermission):
        def has_permission(self, request: Any, view: Any) -> bool:
            if not registry.is_active(name):
                raise NotFound(f"The plugin {name} is not enabled.")
            return True

    return PluginActive


def _wrap(pattern: Any, name: str) -> Any:
    if isinstance(pattern, URLResolver):
        return URLResolver(
            pattern.pattern,
            [_wrap(p, name) for p in pattern.url_patterns],
            pattern.default_kwargs,
            pattern.app_name,
            pattern.namespace,
        )
    callback = pattern.callback
    cls = getattr(callback, "cls", None)
    if cls is None:
        raise TypeError(f"extension {name}: route {pattern.pattern} is not a DRF view")
    guarded = type(cls.__name__, (cls,), {"permission_classes": [*cls.permission_classes, _active_permission(name)]})
    initkwargs = getattr(callback, "initkwargs", {})
    actions = getattr(callback, "actions", None)
    view = guarded.as_view(actions, **initkwargs) if actions else guarded.as_view(**initkwargs)
    return URLPattern(pattern.pattern, view, pattern.default_args, pattern.name)


def extension_patterns() -> list[Any]:
    patterns = []
    for name, item in registry.available().items():
        if not item.ok:
            continue
        try:
            routes = [_wrap(p, name) for p in item.extension.urls()]
        except Exception:
            log.exception("extension %s: its routes could not be mounted", name)
            continue
        if routes:
            patterns.append(path(f"plugins/{name}/", include((routes, f"plugin-{name}"))))
    return patterns

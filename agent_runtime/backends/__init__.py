"""Session backends: where a session's workload runs (docker, kubernetes, local processes).

Backends are found through the entry-point group ``streamspace.agent_backends`` (so a
separately installed package can add one) or given as a dotted path ``pkg.module:Class``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from agent_runtime.backends.base import Backend, BackendError, SessionSpec
from agent_runtime.config import ConfigError

ENTRY_POINT_GROUP = "streamspace.agent_backends"

__all__ = ["ENTRY_POINT_GROUP", "Backend", "BackendError", "SessionSpec", "available_backends", "load_backend_class"]


def available_backends() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_backend_class(name: str) -> type[Backend]:
    """Resolve ``name`` (an entry-point name or ``pkg.module:Class``) to a Backend subclass."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot load backend {name!r}: {exc}") from exc
    else:
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not matches:
            installed = ", ".join(available_backends()) or "none"
            raise ConfigError(
                f"the {name!r} backend is not installed in this agent (installed: {installed}); "
                f"install a package that provides it in the {ENTRY_POINT_GROUP!r} entry-point group"
            )
        try:
            cls = matches[0].load()
        except ImportError as exc:
            raise ConfigError(f"the {name!r} backend cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError(f"{name!r} is not a streamspace Backend subclass")
    return cls

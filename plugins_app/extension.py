"""What an extension plugin is (docs/architecture.md §12): subclass :class:`Extension`.

An extension is a Python package that registers an :class:`Extension` subclass (or
instance) in the entry-point group ``streamspace.plugins``::

    [project.entry-points."streamspace.plugins"]
    example = "streamspace_example_plugin:ExamplePlugin"

It declares the StreamSpace versions it supports (a PEP 440 specifier), its default
settings and a JSON schema for its configuration, and may implement any of the hooks:

- ``handle_event(envelope, config)``: called for each event in ``events`` (all when empty)
  after the change committed; an exception is logged and does not affect other plugins;
- ``urls()``: Django/DRF URL patterns mounted under ``/api/v1/plugins/<name>/``; they
  answer 404 while the plugin is not installed or disabled;
- ``menu_entries(user, config)``: portal menu entries ``{"label", "url", "icon"?}``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Extension:
    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    # PEP 440 specifier the running StreamSpace version must satisfy, e.g. ">=1.0,<2".
    requires_streamspace: ClassVar[str] = ""
    default_settings: ClassVar[dict[str, Any]] = {}
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    # Events this extension handles; empty = every event.
    events: ClassVar[tuple[str, ...]] = ()

    def handle_event(self, envelope: dict[str, Any], config: dict[str, Any]) -> None:
        """React to one event (``{"event", "occurred_at", "actor", "data"}``)."""

    def urls(self) -> list[Any]:
        """URL patterns served under ``/api/v1/plugins/<name>/``."""
        return []

    def menu_entries(self, user: Any, config: dict[str, Any]) -> list[dict[str, str]]:
        """Entries for the portal menu shown to ``user``."""
        return []

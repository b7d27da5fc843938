"""Installing, configuring, enabling and removing plugins (the admin API and Django admin call these).

Configuration is validated against the JSON schema of the plugin's type (an extension's
own schema for extensions); secret fields are split off and stored encrypted; webhook and
Slack URLs pass the outbound URL check (SSRF) when saved, and again on every attempt.
Every change is audited and drops the cached theme and active-extension set.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from plugins_app import bus, http, registry, schemas, secrets
from plugins_app.models import Plugin, PluginType
from streamspace.api.errors import Conflict, ServiceError
from streamspace.audit.services import record


class InvalidConfig(ServiceError):
    code = "invalid_config"


class PluginUnavailable(ServiceError):
    code = "plugin_unavailable"


def _schema_for(plugin_type: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema, default settings) of a plugin."""
    if plugin_type == PluginType.EXTENSION:
        item = registry.available().get(name)
        if item is None:
            raise PluginUnavailable(f"No extension named {name} is installed on this control plane.")
        if not item.ok:
            raise PluginUnavailable(f"The extension {name} cannot be used: {item.error}.")
        return item.extension.config_schema, dict(item.extension.default_settings)
    return schemas.SCHEMAS[plugin_type], {}


def _validate(plugin_type: str, name: str, full_config: dict[str, Any]) -> None:
    schema, _ = _schema_for(plugin_type, name)
    problems = schemas.errors(schema, full_config)
    if problems:
        raise InvalidConfig("The configuration is not valid: " + "; ".join(problems), extra={"errors": problems})
    url = full_config.get("url") if plugin_type in (PluginType.WEBHOOK, PluginType.INTEGRATION) else None
    if url:
        try:
            http.validate_url(url)
        except http.OutboundURLError as exc:
            raise InvalidConfig(f"url: {exc}", code="url_not_allowed") from exc


def check_config(plugin_type: str, name: str, config: dict[str, Any], *, existing: Plugin | None = None) -> None:
    """Validate ``config`` as install/update would (omitted secrets of ``existing`` kept); raises on error."""
    full = dict(config)
    if existing is not None:
        full = {**secrets.read(existing), **full}
    _, defaults = _schema_for(plugin_type, name)
    _validate(plugin_type, name, {**defaults, **full})


def _split(plugin_type: str, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    fields = schemas.SECRET_FIELDS.get(plugin_type, ())
    public = {k: v for k, v in config.items() if k not in fields}
    hidden = {k: v for k, v in config.items() if k in fields}
    return public, hidden


def public_config(plugin: Plugin) -> dict[str, Any]:
    """The configuration as the API shows it: no secret values."""
    return dict(plugin.config or {})


def secret_fields_set(plugin: Plugin) -> list[str]:
    return sorted(secrets.read(plugin))


def _events_of(plugin_type: str, config: dict[str, Any]) -> list[str]:
    if plugin_type in (PluginType.WEBHOOK, PluginType.INTEGRATION):
        return list(config.get("events") or [])
    return []


def _changed() -> None:
    # also for writes that bypass the model signals (queryset updates)
    bus.plugins_changed()


def install_plugin(
    *,
    name: str,
    type: str,
    config: dict[str, Any] | None = None,
    display_name: str = "",
    enabled: bool = True,
    actor: Any = None,
    request: Any = None,
) -> Plugin:
    """Register a plugin. Extensions must be available (entry point, compatible version).

    Raises ``InvalidConfig`` (400) for a configuration its schema refuses,
    ``PluginUnavailable`` (400) for an unknown or incompatible extension and ``Conflict``
    (409, ``plugin_exists``) for a taken name.
    """
    config = dict(config or {})
    _, defaults = _schema_for(type, name)
    full = {**defaults, **config}
    _validate(type, name, full)
    public, hidden = _split(type, full)
    version = ""
    if type == PluginType.EXTENSION:
        version = registry.available()[name].extension.version
    plugin = Plugin(
        name=name,
        type=type,
        display_name=display_name
        or (registry.available()[name].meta["display_name"] if type == PluginType.EXTENSION else name),
        version=version,
        enabled=enabled,
        config=public,
        events=_events_of(type, full),
        installed_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    secrets.write(plugin, hidden)
    try:
        with transaction.atomic():
            plugin.save()
            record("plugin.install", actor=actor, target=plugin, request=request, details={"type": type, "name": name})
            _changed()
    except IntegrityError as exc:
        raise Conflict(f"A plugin named {name} exists already.", code="plugin_exists") from exc
    return plugin


def update_plugin(
    plugin: Plugin,
    *,
    config: dict[str, Any] | None = None,
    display_name: str | None = None,
    enabled: bool | None = None,
    actor: Any = None,
    request: Any = None,
) -> Plugin:
    """Change a plugin's configuration (replaced whole; omitted secrets are kept), name or state."""
    changes: list[str] = []
    if config is not None:
        kept = secrets.read(plugin)
        public, hidden = _split(plugin.type, dict(config))
        hidden = {**kept, **hidden}
        full = {**public, **hidden}
        if plugin.type == PluginType.EXTENSION:
            _, defaults = _schema_for(plugin.type, plugin.name)
            full = {**defaults, **full}
            public = {**defaults, **public}
        _validate(plugin.type, plugin.name, full)
        plugin.config = public
        plugin.events = _events_of(plugin.type, full)
        secrets.write(plugin, hidden)
        changes.append("config")
    if display_name is not None:
        plugin.display_name = display_name
        changes.append("display_name")
    if enabled is not None and enabled != plugin.enabled:
        if enabled and plugin.type == PluginType.EXTENSION:
            _schema_for(plugin.type, plugin.name)  # refuses a package that is gone or incompatible
        plugin.enabled = enabled
        changes.append("enabled")
    with transaction.atomic():
        plugin.save()
        action = "plugin.configure" if "config" in changes else "plugin.update"
        if changes == ["enabled"]:
            action = "plugin.enable" if plugin.enabled else "plugin.disable"
        record(action, actor=actor, target=plugin, request=request, details={"changed": changes})
        _changed()
    return plugin


def remove_plugin(plugin: Plugin, *, actor: Any = None, request: Any = None) -> None:
    """Uninstall a plugin; its delivery log goes with it."""
    with transaction.atomic():
        record(
            "plugin.remove",
            actor=actor,
            target=plugin,
            request=request,
            details={"name": plugin.name, "type": plugin.type},
        )
        plugin.delete()
        _changed()

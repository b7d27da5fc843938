"""The JSON schemas each plugin type's configuration is validated against (jsonschema).

Secret fields (``SECRET_FIELDS``) are accepted in the configuration on input, stored
encrypted in ``Plugin.secrets_encrypted`` and never returned by the API.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from streamspace.events import EVENTS

_EVENTS = {"type": "array", "items": {"enum": list(EVENTS)}, "uniqueItems": True, "maxItems": len(EVENTS)}
_URL = {"type": "string", "minLength": 8, "maxLength": 2000, "pattern": "^https?://"}
_HEADER_NAME = "^[A-Za-z0-9-]{1,64}$"

WEBHOOK = {
    "type": "object",
    "required": ["url", "secret", "events"],
    "additionalProperties": False,
    "properties": {
        "url": _URL,
        "secret": {"type": "string", "minLength": 16, "maxLength": 256},
        "events": _EVENTS,
        "headers": {
            "type": "object",
            "maxProperties": 20,
            "propertyNames": {
                "pattern": _HEADER_NAME,
                "not": {"pattern": "(?i)^(host|content-length|x-streamspace-.*)$"},
            },
            "additionalProperties": {"type": "string", "maxLength": 1000},
        },
    },
}

SLACK = {
    "type": "object",
    "required": ["kind", "url", "events"],
    "additionalProperties": False,
    "properties": {
        "kind": {"const": "slack"},
        "url": _URL,
        "events": _EVENTS,
        "channel": {"type": "string", "maxLength": 80},
        "username": {"type": "string", "maxLength": 80},
    },
}

EMAIL = {
    "type": "object",
    "required": ["kind", "to", "events"],
    "additionalProperties": False,
    "properties": {
        "kind": {"const": "email"},
        "to": {
            "type": "array",
            "minItems": 1,
            "maxItems": 50,
            "items": {"type": "string", "maxLength": 254, "pattern": "^[^@\\s]+@[^@\\s]+$"},
        },
        "events": _EVENTS,
        "subject_prefix": {"type": "string", "maxLength": 60},
    },
}

INTEGRATION = {
    "type": "object",
    "required": ["kind"],
    "properties": {"kind": {"enum": ["slack", "email"]}},
    "allOf": [
        {"if": {"properties": {"kind": {"const": "slack"}}}, "then": SLACK},
        {"if": {"properties": {"kind": {"const": "email"}}}, "then": EMAIL},
    ],
}

_COLOR = {
    "type": "string",
    "maxLength": 64,
    "pattern": "^(#[0-9a-fA-F]{3,8}|(rgb|rgba|hsl|hsla)\\([0-9.,%\\s/]+\\)|[a-zA-Z]{3,20})$",
}

THEME = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "product_name": {"type": "string", "minLength": 1, "maxLength": 60},
        "logo_url": {"type": "string", "maxLength": 500, "pattern": "^(https://|/)[^\\s\"'<>]*$"},
        "colors": {
            "type": "object",
            "maxProperties": 40,
            "propertyNames": {"pattern": "^[a-z][a-z0-9_-]{0,30}$"},
            "additionalProperties": _COLOR,
        },
    },
}

SCHEMAS: dict[str, dict[str, Any]] = {"webhook": WEBHOOK, "integration": INTEGRATION, "theme": THEME}

SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "webhook": ("secret",),
    # A Slack incoming-webhook URL is itself the credential.
    "integration": ("url",),
    "theme": (),
    "extension": (),
}


def check_schema(schema: dict[str, Any]) -> None:
    """Raise ``jsonschema.SchemaError`` if ``schema`` (an extension's) is not a valid schema."""
    Draft202012Validator.check_schema(schema)


def errors(schema: dict[str, Any], config: Any) -> list[str]:
    """Human-readable validation errors of ``config`` against ``schema`` (empty: valid)."""
    try:
        validator = Draft202012Validator(schema)
    except SchemaError as exc:  # pragma: no cover - schemas are checked at load
        return [f"the plugin's schema is invalid: {exc.message}"]
    found = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))[:20]:
        where = "/".join(str(p) for p in error.absolute_path) or "config"
        found.append(f"{where}: {error.message[:300]}")
    return found

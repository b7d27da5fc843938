"""Typed environment helpers that fail loudly on bad values (healthchecks' envbool/envint).

Every helper also honours a ``<NAME>_FILE`` variant so secrets can come from mounted files.
"""

from __future__ import annotations

import os

# One parser for booleans and one error type for agent and control plane alike.
from agent_runtime.config import ConfigError, parse_bool

__all__ = ["ConfigError", "envbool", "envint", "envlist", "envstr"]


def _raw(name: str) -> str | None:
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        with open(file_name, encoding="utf-8") as fh:
            return fh.read().strip()
    return os.environ.get(name)


def envstr(name: str, default: str = "") -> str:
    value = _raw(name)
    return default if value is None else value


def envbool(name: str, default: bool = False) -> bool:
    return parse_bool(_raw(name), name=name, default=default)


def envint(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r} is not an integer") from exc
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name}={number} is below the minimum {minimum}")
    return number


def envlist(name: str, default: list[str] | None = None) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default or [])
    return [item.strip() for item in value.split(",") if item.strip()]

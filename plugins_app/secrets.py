"""A plugin's secret configuration values, encrypted at rest (``streamspace/crypto.py``)."""

from __future__ import annotations

import logging

from streamspace import crypto

log = logging.getLogger(__name__)


def read(plugin) -> dict[str, str]:
    """The decrypted secrets of ``plugin`` ({} if none, or if they cannot be decrypted)."""
    if not plugin.secrets_encrypted:
        return {}
    try:
        value = crypto.decrypt_json(plugin.secrets_encrypted)
    except crypto.DecryptionError:
        log.error("secrets of plugin %s cannot be decrypted with the configured keys", plugin.name)
        return {}
    return value if isinstance(value, dict) else {}


def write(plugin, values: dict[str, str]) -> None:
    """Encrypt ``values`` into ``plugin.secrets_encrypted`` (the caller saves the plugin)."""
    plugin.secrets_encrypted = crypto.encrypt_json(values) if values else ""

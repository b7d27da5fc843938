"""Symmetric encryption for secrets at rest (plugin secrets, agent credentials, OTP seeds).

Values are sealed with Fernet (AES-128-CBC + HMAC-SHA256, with a timestamp) from the
``cryptography`` package. Keys come from ``settings.STREAMSPACE_ENCRYPTION_KEY``: a
comma-separated list whose first entry encrypts and every entry decrypts, so a key can be
rotated by prepending the new one and running :func:`rotate` over stored values. Each entry
is either a Fernet key (32 url-safe base64 bytes) or any passphrase, which is stretched
with HKDF-SHA256. When the setting is empty (development), the key is derived from
``SECRET_KEY``; changing ``SECRET_KEY`` then makes old ciphertexts unreadable.

>>> token = encrypt("s3cret")
>>> decrypt(token)
's3cret'
"""

from __future__ import annotations

import base64
import binascii
import functools
import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.signals import setting_changed

__all__ = ["DecryptionError", "decrypt", "decrypt_json", "encrypt", "encrypt_json", "rotate"]

_HKDF_INFO = b"streamspace-encryption-v1"


class DecryptionError(ValueError):
    """The ciphertext was not produced by any configured key, or was tampered with."""


def _fernet_key(material: str) -> bytes:
    """Return a Fernet key for one configured entry (a Fernet key as-is, else HKDF of it)."""
    candidate = material.strip().encode()
    try:
        if len(base64.urlsafe_b64decode(candidate)) == 32:
            return candidate
    except (binascii.Error, ValueError):
        pass
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(candidate)
    return base64.urlsafe_b64encode(derived)


@functools.lru_cache(maxsize=1)
def _cipher() -> MultiFernet:
    configured = getattr(settings, "STREAMSPACE_ENCRYPTION_KEY", "") or ""
    entries = [entry for entry in configured.split(",") if entry.strip()]
    if not entries:
        entries = [settings.SECRET_KEY]
    return MultiFernet([Fernet(_fernet_key(entry)) for entry in entries])


def _reset_cache(*, setting: str, **_: object) -> None:
    if setting in {"STREAMSPACE_ENCRYPTION_KEY", "SECRET_KEY"}:
        _cipher.cache_clear()


setting_changed.connect(_reset_cache)


def encrypt(plaintext: str | bytes) -> str:
    """Encrypt ``plaintext`` with the current key; returns an ASCII token safe to store."""
    data = plaintext.encode() if isinstance(plaintext, str) else plaintext
    return _cipher().encrypt(data).decode("ascii")


def decrypt_bytes(token: str | bytes) -> bytes:
    """Decrypt a token made by :func:`encrypt` with any configured key, as bytes."""
    raw = token.encode("ascii") if isinstance(token, str) else token
    try:
        return _cipher().decrypt(raw)
    except (InvalidToken, UnicodeEncodeError) as exc:
        raise DecryptionError("ciphertext cannot be decrypted with the configured keys") from exc


def decrypt(token: str | bytes) -> str:
    """Decrypt a token made by :func:`encrypt`; raises :class:`DecryptionError` if invalid."""
    return decrypt_bytes(token).decode()


def encrypt_json(value: object) -> str:
    """Encrypt any JSON-serialisable value (e.g. a plugin's secrets dict)."""
    return encrypt(json.dumps(value, separators=(",", ":"), sort_keys=True))


def decrypt_json(token: str | bytes) -> object:
    """Inverse of :func:`encrypt_json`."""
    return json.loads(decrypt(token))


def rotate(token: str | bytes) -> str:
    """Re-encrypt ``token`` under the first (current) key, for key rotation."""
    raw = token.encode("ascii") if isinstance(token, str) else token
    try:
        return _cipher().rotate(raw).decode("ascii")
    except InvalidToken as exc:
        raise DecryptionError("ciphertext cannot be decrypted with the configured keys") from exc

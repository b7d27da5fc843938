"""Secrets at rest: Fernet encryption with rotation (streamspace/crypto.py)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from streamspace import crypto


def test_round_trip_and_ciphertext_hides_plaintext() -> None:
    token = crypto.encrypt("hunter2-secret")
    assert "hunter2" not in token
    assert crypto.decrypt(token) == "hunter2-secret"
    assert crypto.encrypt("x") != crypto.encrypt("x")  # random IV per value


def test_json_round_trip() -> None:
    value = {"token": "abc", "nested": [1, 2]}
    assert crypto.decrypt_json(crypto.encrypt_json(value)) == value


def test_tampered_token_is_refused() -> None:
    token = crypto.encrypt("value")
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(tampered)
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt("not a token")


def test_key_from_settings_and_rotation(settings) -> None:
    old_key = Fernet.generate_key().decode()
    settings.STREAMSPACE_ENCRYPTION_KEY = old_key
    sealed = crypto.encrypt("rotate me")
    assert Fernet(old_key.encode()).decrypt(sealed.encode()) == b"rotate me"

    settings.STREAMSPACE_ENCRYPTION_KEY = "a new passphrase," + old_key
    assert crypto.decrypt(sealed) == "rotate me"  # old key still decrypts
    rotated = crypto.rotate(sealed)
    settings.STREAMSPACE_ENCRYPTION_KEY = "a new passphrase"
    assert crypto.decrypt(rotated) == "rotate me"
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(sealed)


def test_dev_key_derives_from_secret_key(settings) -> None:
    settings.STREAMSPACE_ENCRYPTION_KEY = ""
    sealed = crypto.encrypt("v")
    settings.SECRET_KEY = "another-secret-key-for-the-test-only-000000000000"
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(sealed)

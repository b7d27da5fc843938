"""Agent tokens: shown once, stored as SHA-256 (they are long random strings, so no slow KDF)."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "ssa_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()

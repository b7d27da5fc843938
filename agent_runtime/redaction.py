"""Masking secrets in text: the patterns the agent (output tails) and the control plane (its
logs, stored tails) share. Each side adds the keys that matter where it looks
(:func:`key_value` with its own key alternation) and applies them with :func:`redact`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "[REDACTED]"

Pattern = tuple[re.Pattern[str], str]

COMMON: tuple[Pattern, ...] = (
    # Authorization: Bearer xxx / Token xxx / Basic xxx
    (re.compile(r"(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
    # JWTs (three base64url parts, the first starting with eyJ)
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"), MASK),
    # StreamSpace personal API keys
    (re.compile(r"\bssp_[A-Za-z0-9_-]{8,}"), MASK),
)


def key_value(keys: str) -> Pattern:
    """``key=value``, ``"key": "value"`` and ``key: value`` for keys matching ``keys`` (a
    regular-expression alternation, matched case-insensitively as a whole word)."""
    return (
        re.compile(
            rf"""(?ix)
            (["']?\b(?:{keys})\b["']?
            \s*[:=]\s*)
            (?:"[^"]*"|'[^']*'|[^\s&,;"'}}]+)
            """
        ),
        rf"\1{MASK}",
    )


def redact(text: str, patterns: Iterable[Pattern]) -> str:
    """``text`` with every match of ``patterns`` masked, in order."""
    for pattern, replacement in patterns:
        text = pattern.sub(replacement, text)
    return text

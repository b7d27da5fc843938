"""A logging filter that keeps secrets out of logs.

Attached to every handler in ``settings.LOGGING``. It masks bearer/API tokens in
``Authorization`` values, JWT-looking strings, StreamSpace API keys, and the values of
``password``/``token``/``secret``-like keys in query strings, JSON and ``key=value`` text.
"""

from __future__ import annotations

import logging
import re

MASK = "[REDACTED]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer xxx / Token xxx / Basic xxx
    (re.compile(r"(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
    # JWTs (three base64url parts, the first starting with eyJ)
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"), MASK),
    # StreamSpace personal API keys
    (re.compile(r"\bssp_[A-Za-z0-9_-]{8,}"), MASK),
    # key=value, "key": "value", key: value for sensitive keys
    (
        re.compile(
            r"""(?ix)
            (["']?\b(?:[\w-]*(?:password|passwd|secret|token|api[_-]?key)|otp|code|authorization|sessionid|csrftoken|SAMLResponse)\b["']?
            \s*[:=]\s*)
            (?:"[^"]*"|'[^']*'|[^\s&,;"'}]+)
            """
        ),
        rf"\1{MASK}",
    ),
)


def redact(text: str) -> str:
    """Return ``text`` with every secret-looking value masked."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecretsFilter(logging.Filter):
    """Rewrites a record's message (args merged) with :func:`redact`; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the caller's bug; leave it to logging
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True

"""A logging filter that keeps secrets out of logs.

Attached to every handler in ``settings.LOGGING``. It masks bearer/API tokens in
``Authorization`` values, JWT-looking strings, StreamSpace API keys, and the values of
``password``/``token``/``secret``-like keys in query strings, JSON and ``key=value`` text.
"""

from __future__ import annotations

import logging

from agent_runtime import redaction

MASK = redaction.MASK

_PATTERNS: tuple[redaction.Pattern, ...] = (
    *redaction.COMMON,
    redaction.key_value(
        r"[\w-]*(?:password|passwd|secret|token|api[_-]?key)|otp|code|authorization|sessionid|csrftoken|SAMLResponse"
    ),
)


def redact(text: str) -> str:
    """Return ``text`` with every secret-looking value masked."""
    return redaction.redact(text, _PATTERNS)


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

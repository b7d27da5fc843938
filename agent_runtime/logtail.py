"""The last lines of a workload's output, as an agent reports them with a failure.

:func:`tail` keeps the end of what a process or container wrote: at most ``max_lines``
lines and ``max_bytes`` bytes of UTF-8 (cut on a character boundary), with secrets masked
by :func:`redact` *before* anything leaves the host. The control plane masks again with its
own rules (``streamspace.logredact``) when it stores and serves the text; the patterns here
follow those and add what appears in program output rather than in requests (private key
blocks, passwords in URLs).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from agent_runtime import redaction
from agent_runtime.protocol import LOG_TAIL_MAX_BYTES, LOG_TAIL_MAX_LINES

_PATTERNS: tuple[redaction.Pattern, ...] = (
    # PEM private keys, whole blocks
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S),
        redaction.MASK,
    ),
    # scheme://user:password@host
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]+:)[^\s@/]+@"), rf"\1{redaction.MASK}@"),
    *redaction.COMMON,
    # secret-looking keys in program output (AGENT_TOKEN=..., password: ...)
    redaction.key_value(
        r"[\w-]*(?:password|passwd|secret|token|api[_-]?key|credential|private[_-]?key)[\w-]*|authorization"
    ),
)


def redact(text: str) -> str:
    """``text`` with every secret-looking value masked."""
    return redaction.redact(text, _PATTERNS)


def tail(text: str | bytes, *, max_lines: int = LOG_TAIL_MAX_LINES, max_bytes: int = LOG_TAIL_MAX_BYTES) -> str:
    """The end of ``text``: its last ``max_lines`` lines within ``max_bytes`` bytes, masked.

    Bytes are decoded as UTF-8 (invalid sequences replaced), ``\\r\\n`` becomes ``\\n``, NUL
    characters are dropped (PostgreSQL refuses them in text). Masking happens before the cut,
    so a secret straddling the cut is not half-shown.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text.replace("\r\n", "\n").replace("\x00", "")
    lines = text.rstrip("\n").split("\n")[-max_lines:] if text.strip() else []
    masked = redact("\n".join(lines))
    encoded = masked.encode("utf-8")
    if len(encoded) > max_bytes:
        masked = encoded[-max_bytes:].decode("utf-8", errors="ignore")
        masked = masked.split("\n", 1)[1] if "\n" in masked else masked  # drop the partial first line
    return masked


def file_tail(path: str | Path, **bounds: int) -> str:
    """:func:`tail` of the end of a file (only its last bytes are read); "" if it is unreadable."""
    read = 4 * bounds.get("max_bytes", LOG_TAIL_MAX_BYTES) + 4096  # room for what masking shortens
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - read))
            data = fh.read()
    except OSError:
        return ""
    if size > read:
        data = data.split(b"\n", 1)[1] if b"\n" in data else data  # the first line is partial
    return tail(data, **bounds)

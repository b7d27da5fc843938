"""The one parser of ``Authorization`` header values, for every endpoint that reads one.

An ``Authorization`` value is ``<scheme> <credential>`` (RFC 9110 section 11.4): the scheme
is case-insensitive and spaces or tabs separate it from the credential. Every credential
StreamSpace accepts (access JWTs, agent tokens, personal API tokens) is a single ``token68``
(RFC 9110 section 11.2: letters, digits, ``-._~+/`` and trailing ``=``), so anything else
(a missing credential, two words, a character outside that set, bytes that are not ASCII)
yields an empty credential and authenticates nobody.

This module imports nothing of Django, so the agents' raw ASGI endpoints and the proxy's
front use it on the event loop without loading anything.
"""

from __future__ import annotations

import re

# One scheme, one or more spaces/tabs, one token68; surrounding spaces/tabs are ignored.
_HEADER = re.compile(r"[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:[ \t]+(.*?))?[ \t]*")
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")


def parse_authorization(value: bytes | str | None) -> tuple[str, str]:
    """``(scheme in lower case, credential)`` of an ``Authorization`` header value.

    ``("", "")`` when the value is absent or has no scheme; the credential is ``""`` when
    it is missing or is not one ``token68``. Bytes are read as latin-1 (HTTP's octets);
    any octet outside ASCII then fails the ``token68`` rule.
    """
    if not value:
        return "", ""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    match = _HEADER.fullmatch(text)
    if match is None:
        return "", ""
    scheme, credential = match.group(1).lower(), match.group(2) or ""
    if not _TOKEN68.fullmatch(credential):
        return scheme, ""
    return scheme, credential


def bearer_token(value: bytes | str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` value, or ``""`` for anything else."""
    scheme, credential = parse_authorization(value)
    return credential if scheme == "bearer" else ""

"""Webhook signatures (docs/architecture.md §12), in the style of Stripe's.

``X-StreamSpace-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``

Receivers recompute the HMAC over the raw body, compare in constant time and reject
timestamps older than a tolerance (replay protection); :func:`verify` does exactly that and
is what the tests and the README's receiver example use.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-StreamSpace-Signature"
EVENT_HEADER = "X-StreamSpace-Event"
DELIVERY_HEADER = "X-StreamSpace-Delivery"


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with ``secret``."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``X-StreamSpace-Signature`` header value for ``body``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={signature(secret, body, timestamp)}"


def verify(secret: str, body: bytes, header: str, *, tolerance_s: int = 300, now: float | None = None) -> bool:
    """True if ``header`` signs ``body`` with ``secret`` and its timestamp is recent enough."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, body, timestamp)
    return hmac.compare_digest(expected, fields.get("v1", ""))

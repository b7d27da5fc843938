"""daphne's access-log lines for connections the proxy's front serves itself.

daphne writes one line per HTTP response and one per WebSocket connect and disconnect,
through its server's ``log_action``; requests and sockets that never reach daphne's own
protocol write the same lines through the same call, so the access log reads the same
with or without the front.
"""

from __future__ import annotations

from typing import Any


def client_text(client: Any) -> str | None:
    """``host:port`` as daphne's access log writes a client (``None`` when there is none)."""
    return f"{client[0]}:{client[1]}" if client else None


def log_websocket(server: Any, scope: dict, action: str) -> None:
    """daphne's line for a WebSocket the front took (``action``: ``connected``, ``disconnected``)."""
    server.log_action("websocket", action, {"path": scope["path"], "client": client_text(scope.get("client"))})

"""Every route the control plane serves, read from its configuration.

* HTTP: ``get_resolver().url_patterns`` walked recursively; each route is its full pattern
  (``/api/v1/sessions/<uuid:session_id>/wake``) and, for DRF views, the methods the view
  class implements.
* WebSocket: ``streamspace.routing``'s browser and agent patterns.
* The session proxy, mounted ahead of Django for both HTTP and WebSocket
  (``streamspace.routing.build_application``): under ``sessions_app.proxy.PREFIX`` on the
  portal's origin, and on every session's own origin, ``<session-id>.<STREAMSPACE_SESSION_DOMAIN>``.

The matrix (``tests/security/matrix.py``) must have an expectation for each; the
completeness tests list any route without one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver

from sessions_app import proxy
from streamspace.routing import agent_websocket_urlpatterns, browser_websocket_urlpatterns

IGNORED_METHODS = frozenset({"head", "options"})  # answered by the framework for every route


@dataclass(frozen=True)
class Route:
    pattern: str  # "/" + the concatenated patterns of the resolvers on the way
    callback: Any

    @property
    def drf_methods(self) -> tuple[str, ...] | None:
        """Methods a DRF view implements (lower case, sorted), or None for other views."""
        view_class = getattr(self.callback, "cls", None)
        if view_class is None:
            return None
        allowed = getattr(view_class, "http_method_names", ())
        return tuple(sorted(m for m in allowed if m not in IGNORED_METHODS and hasattr(view_class, m)))


def _walk(patterns: list[Any], prefix: str) -> list[Route]:
    routes: list[Route] = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            routes += _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            routes.append(Route("/" + prefix + str(pattern.pattern), pattern.callback))
    return routes


def http_routes() -> list[Route]:
    return _walk(get_resolver().url_patterns, "")


def websocket_routes() -> list[str]:
    """Patterns of the WebSocket routes (``/ws/portal/``, ``/api/v1/agents/connect``, ...)."""
    return ["/" + str(p.pattern) for p in [*browser_websocket_urlpatterns(), *agent_websocket_urlpatterns()]]


def proxy_mounts() -> list[str]:
    """The raw ASGI mounts ahead of Django: the session proxy, over HTTP and WebSocket, under
    its prefix and on each session's own host."""
    origin = f"<session-id>.{settings.STREAMSPACE_SESSION_DOMAIN}"
    return [f"http {proxy.PREFIX}", f"websocket {proxy.PREFIX}", f"http {origin}", f"websocket {origin}"]


# Path converters of the API's routes -> the placeholders of tests/api_matrix.py.
PLACEHOLDERS = {
    "session_id": "session",
    "slug": "slug",
    "user_id": "user",
    "agent_id": "agent",
    "token_id": "token",
    "pk": "plugin",
    "delivery_id": "delivery",
    "share_id": "share",
}
_CONVERTER = re.compile(r"<(?:\w+:)?(\w+)>")


def as_template(pattern: str) -> str:
    """``/api/v1/sessions/<uuid:session_id>`` -> ``/api/v1/sessions/{session}`` (KeyError for a
    parameter name the matrix does not know yet: add it to :data:`PLACEHOLDERS`)."""
    return _CONVERTER.sub(lambda m: "{" + PLACEHOLDERS[m.group(1)] + "}", pattern)

"""Protocol routing. Browser-facing sockets check Origin; the agent endpoint does not
(agents are not browsers: they authenticate with their token, docs/architecture.md §14).

A request whose ``Host`` is a session's own origin (``<session-id>.<STREAMSPACE_SESSION_DOMAIN>``)
goes to the session proxy whatever its path: nothing of the portal (pages, API, sockets) is
ever served on a session's origin, so a session's page cannot reach the portal by a relative
URL. Every other host is the portal's.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import ParseResult

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.urls import URLPattern

from agents_app.routing import websocket_urlpatterns
from sessions_app import proxy
from sessions_app.files import endpoint as files
from sessions_app.proxy.http import proxy_http
from sessions_app.proxy.origins import is_session_origin, scope_session_id
from streamspace.portal.routing import websocket_urlpatterns as portal


def agent_websocket_urlpatterns() -> list[URLPattern]:
    return websocket_urlpatterns


def browser_websocket_urlpatterns() -> list[URLPattern]:
    return [*portal]


class PortalOriginValidator(OriginValidator):
    """Channels' ``AllowedHostsOriginValidator`` that also refuses every session origin.

    ``ALLOWED_HOSTS`` may well cover the session domain (``.example.com``); a session's page
    must still never open the portal's sockets with the viewer's cookies.
    """

    def __init__(self, application: Any) -> None:
        allowed = settings.ALLOWED_HOSTS
        if settings.DEBUG and not allowed:
            allowed = ["localhost", "127.0.0.1", "[::1]"]
        super().__init__(application, allowed)

    def valid_origin(self, parsed_origin: ParseResult | None) -> bool:
        if parsed_origin is not None and is_session_origin(parsed_origin.geturl()):
            return False
        return super().valid_origin(parsed_origin)


def build_application(http_app: Any) -> ProtocolTypeRouter:
    browser = PortalOriginValidator(AuthMiddlewareStack(URLRouter(browser_websocket_urlpatterns())))
    agents = URLRouter(agent_websocket_urlpatterns())

    # The session proxy (docs/architecture.md §10.2) is raw ASGI ahead of Django and Channels, for
    # speed; its WebSocket side checks Origin itself (a session's origin admits only its own pages).

    prefix = proxy.PREFIX

    async def http_router(scope: dict, receive: Any, send: Any) -> None:
        if scope["path"].startswith(prefix) or scope_session_id(scope) is not None:
            return await proxy_http(scope, receive, send)
        if files.matches(scope["path"]):  # streamed both ways, so not through Django (§23)
            return await files.files_app(scope, receive, send)
        return await http_app(scope, receive, send)

    async def websocket_router(scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope_session_id(scope) is not None or path.startswith(prefix):
            return await proxy.websocket_app(scope, receive, send)
        if path.startswith("/api/v1/agents/"):
            return await agents(scope, receive, send)
        return await browser(scope, receive, send)

    return ProtocolTypeRouter({"http": http_router, "websocket": websocket_router})

"""Protocol routing. Browser-facing sockets check Origin; the agent endpoint does not
(agents are not browsers: they authenticate with their token, docs/architecture.md §14)."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import URLPattern


def agent_websocket_urlpatterns() -> list[URLPattern]:
    from agents_app.routing import websocket_urlpatterns

    return websocket_urlpatterns


def browser_websocket_urlpatterns() -> list[URLPattern]:
    from streamspace.portal.routing import websocket_urlpatterns as portal

    return [*portal]


def build_application(http_app: Any) -> ProtocolTypeRouter:
    browser = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(browser_websocket_urlpatterns())))
    agents = URLRouter(agent_websocket_urlpatterns())

    # The session proxy (docs/architecture.md §10.2) is raw ASGI ahead of Django and Channels, for speed;
    # its WebSocket side checks Origin itself (browsers must come from this site).
    from sessions_app import proxy
    from sessions_app.proxy.http import proxy_http  # bound once: the router runs per request

    prefix = proxy.PREFIX

    async def http_router(scope: dict, receive: Any, send: Any) -> None:
        if scope["path"].startswith(prefix):
            return await proxy_http(scope, receive, send)
        return await http_app(scope, receive, send)

    async def websocket_router(scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if path.startswith("/api/v1/agents/"):
            return await agents(scope, receive, send)
        if path.startswith(proxy.PREFIX):
            return await proxy.websocket_app(scope, receive, send)
        return await browser(scope, receive, send)

    return ProtocolTypeRouter({"http": http_router, "websocket": websocket_router})

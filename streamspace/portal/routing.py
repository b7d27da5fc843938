from __future__ import annotations

from django.urls import path

from streamspace.portal.consumers import PortalConsumer

websocket_urlpatterns = [
    path("ws/portal/", PortalConsumer.as_asgi()),
]

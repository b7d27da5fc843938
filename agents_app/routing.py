from django.urls import URLPattern, path

from agents_app.hub.consumer import AgentConsumer
from agents_app.tunnels import tunnel_endpoint

websocket_urlpatterns: list[URLPattern] = [
    path("api/v1/agents/connect", AgentConsumer.as_asgi()),
    # The agent's side of a session tunnel: raw bytes, no consumer.
    path("api/v1/agents/tunnel/<str:stream_id>", tunnel_endpoint),
]

from django.urls import URLPattern, path

from agents_app.consumers import AgentConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("api/v1/agents/connect", AgentConsumer.as_asgi()),
]

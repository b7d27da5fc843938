"""An example StreamSpace extension: it records every event it sees and serves them back.

- ``handle_event``: appends the envelope to :data:`RECEIVED` (tests read it);
- routes ``GET /api/v1/plugins/example/`` (greeting from the config) and
  ``GET /api/v1/plugins/example/events`` (the event names seen, newest last);
- one portal menu entry, labelled from the config.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from django.urls import path
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from plugins_app.extension import Extension
from plugins_app.registry import active

RECEIVED: deque[dict[str, Any]] = deque(maxlen=1000)


def _config() -> dict[str, Any]:
    return active().get(ExamplePlugin.name, {})


class HelloView(APIView):
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return Response({"plugin": ExamplePlugin.name, "greeting": _config().get("greeting", "")})


class EventsView(APIView):
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return Response({"events": [envelope["event"] for envelope in RECEIVED]})


class ExamplePlugin(Extension):
    name = "example"
    display_name = "Example plugin"
    version = "1.0.0"
    requires_streamspace = ">=1.0,<2"
    default_settings = {"greeting": "Hello from the example plugin", "menu_label": "Example"}
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "greeting": {"type": "string", "maxLength": 200},
            "menu_label": {"type": "string", "minLength": 1, "maxLength": 40},
        },
    }

    def handle_event(self, envelope: dict[str, Any], config: dict[str, Any]) -> None:
        RECEIVED.append(envelope)

    def urls(self) -> list[Any]:
        return [path("", HelloView.as_view(), name="hello"), path("events", EventsView.as_view(), name="events")]

    def menu_entries(self, user: Any, config: dict[str, Any]) -> list[dict[str, str]]:
        return [{"label": config.get("menu_label", "Example"), "url": "/api/v1/plugins/example/", "icon": "🧩"}]

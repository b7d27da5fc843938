"""ASGI entry point: HTTP through Django (one worker-thread call per request,
``streamspace.transport.django_asgi``), WebSockets through Channels' router."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamspace.settings")

from streamspace.transport.django_asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from streamspace.routing import build_application  # noqa: E402

application = build_application(django_asgi_app)

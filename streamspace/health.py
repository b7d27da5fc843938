"""Liveness and readiness probes."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from streamspace import redis_client


def healthz(request: HttpRequest) -> JsonResponse:
    """The process serves requests."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any driver error means "not ready"
        return f"database: {exc.__class__.__name__}"
    return None


def _check_redis() -> str | None:
    if not settings.REDIS_URL:
        return None
    try:
        client = redis_client.client(socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"redis: {exc.__class__.__name__}"
    return None


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready when the database (and Redis, when configured) answer."""
    problems = [p for p in (_check_database(), _check_redis()) if p]
    body = {"status": "ok" if not problems else "unavailable", "problems": problems, "pod": settings.POD_NAME}
    return JsonResponse(body, status=200 if not problems else 503)

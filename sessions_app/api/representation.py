"""The session object of the API, built from ``values()`` rows.

Listing is the hottest read of the API (portals poll it); building model instances and
running a DRF serializer per row costs several times more CPU (bench/RESULTS.md). The
OpenAPI shape is declared by ``SessionSerializer``; ``test_session_representation`` keeps
the two identical.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from sessions_app.models import Session

_COLUMNS = (
    "id",
    "name",
    "user__username",
    "template__slug",
    "state",
    "platform",
    "agent__agent_id",
    "cpu_millicores",
    "memory_mb",
    "persistent_home",
    "idle_timeout_s",
    "streaming_ready",
    "streaming_port",
    "last_activity",
    "created_at",
    "updated_at",
    "state_changed_at",
    "status_message",
)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def represent(row: dict[str, Any]) -> dict[str, Any]:
    session_id = str(row["id"])
    return {
        "id": session_id,
        "name": row["name"],
        "user": row["user__username"],
        "template": row["template__slug"],
        "state": row["state"],
        "platform": row["platform"],
        "agent_id": row["agent__agent_id"],
        "resources": {"cpu_millicores": row["cpu_millicores"], "memory_mb": row["memory_mb"]},
        "persistent_home": row["persistent_home"],
        "idle_timeout_s": row["idle_timeout_s"],
        "streaming_ready": row["streaming_ready"],
        "streaming_port": row["streaming_port"],
        "last_activity": _iso(row["last_activity"]),
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "state_changed_at": _iso(row["state_changed_at"]),
        "status_message": row["status_message"],
        "viewer_path": f"/api/v1/http/{session_id}/",
    }


def session_rows(queryset: QuerySet[Session]) -> QuerySet:
    return queryset.values(*_COLUMNS)


def represent_many(queryset: QuerySet[Session]) -> list[dict[str, Any]]:
    return [represent(row) for row in session_rows(queryset)]


def represent_one(session_id: Any) -> dict[str, Any]:
    return represent(session_rows(Session.objects.filter(pk=session_id)).get())

"""The session API's responses, byte for byte, against recorded snapshots.

The read path of the sessions API is tuned for speed (``bench/jupyterhub_bench.py``): rows
instead of model instances, its own JSON renderer, a cached user lookup. None of that may
change what a client receives, so these tests compare the exact bytes and content type of
representative answers (one session, a page, the empty page, the errors) with
``snapshots/sessions_api.<database vendor>.json`` (PostgreSQL's ``jsonb`` orders the keys of
``progress`` its own way), recorded from DRF's own serializer and renderer. A deliberate
change of the API updates them: ``SNAPSHOT_UPDATE=1 pytest <this file>`` on each database.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client
from rest_framework.renderers import JSONRenderer

from sessions_app.api.serializers import SessionSerializer
from sessions_app.models import Session
from tests.support.clients import client_for
from tests.support.factories import make_session, share

SNAPSHOTS = Path(__file__).parent / "snapshots"
FIRST = uuid.UUID("00000000-0000-4000-8000-000000000001")
SECOND = uuid.UUID("00000000-0000-4000-8000-000000000002")
SHARED = uuid.UUID("00000000-0000-4000-8000-000000000003")
MISSING = uuid.UUID("00000000-0000-4000-8000-0000000000ff")
WHEN = datetime(2026, 12, 7, 15, 4, 5, 123456, tzinfo=UTC)
LATER = datetime(2026, 12, 7, 16, 0, 0, tzinfo=UTC)

pytestmark = pytest.mark.django_db


@pytest.fixture
def sessions(alice, bob, template, docker_agent) -> list[Session]:
    """Fixed rows: every kind of value the session object carries (nulls, unicode, JSON)."""
    first = make_session(
        alice,
        template,
        docker_agent,
        id=FIRST,
        name="Bureau — ünïcödé ✓ \u2028 line",
        state="running",
        streaming_ready=True,
        streaming_port=8080,
        last_activity=WHEN,
        state_changed_at=WHEN,
        status_message='Ready "now"',
        launch_progress=[
            {"step": "image", "label": "Image", "state": "done", "at_s": 0.0, "duration_s": 1.25},
            {"step": "ready", "label": "Ready", "state": "active", "at_s": 1.5, "duration_s": None},
        ],
    )
    second = make_session(
        alice,
        template,
        None,
        id=SECOND,
        name="second",
        state="failed",
        exit_code=137,
        last_activity=WHEN,
        state_changed_at=LATER,
        status_message="The workload exited with status 137.",
    )
    shared = make_session(
        bob, template, docker_agent, id=SHARED, name="bob's", last_activity=LATER, state_changed_at=LATER
    )
    share(shared, alice)
    Session.objects.filter(pk=FIRST).update(created_at=WHEN, updated_at=WHEN)
    Session.objects.filter(pk__in=[SECOND, SHARED]).update(created_at=LATER, updated_at=LATER)
    return [first, second, shared]


def answers(alice) -> dict[str, dict[str, str | int]]:
    """The representative requests and what each answered (status, content type, body)."""
    client = client_for(alice)
    requests = {
        "one": f"/api/v1/sessions/{FIRST}",
        "one_failed": f"/api/v1/sessions/{SECOND}",
        "one_shared": f"/api/v1/sessions/{SHARED}",
        "page": "/api/v1/sessions?page_size=100",
        "page_2_of_1": "/api/v1/sessions?page_size=1&page=2",
        "page_state": "/api/v1/sessions?state=failed",
        "page_empty": "/api/v1/sessions?state=hibernated",
        "bad_state": "/api/v1/sessions?state=bogus",
        "bad_page": "/api/v1/sessions?page=99",
        "missing": f"/api/v1/sessions/{MISSING}",
    }
    out = {}
    for name, path in requests.items():
        response = client.get(path)
        out[name] = {
            "status": response.status_code,
            "type": response["Content-Type"],
            "body": response.content.decode(),
        }
    for name, header in {"no_auth": None, "bad_jwt": "Bearer not.a.jwt", "bad_token": "Token ssp_x_y"}.items():
        anonymous = Client(HTTP_AUTHORIZATION=header) if header else Client()
        response = anonymous.get(f"/api/v1/sessions/{FIRST}")
        out[name] = {
            "status": response.status_code,
            "type": response["Content-Type"],
            "body": response.content.decode(),
        }
    return out


def test_session_api_answers_match_the_snapshot(alice, sessions):
    got = answers(alice)
    snapshot = SNAPSHOTS / f"sessions_api.{connection.vendor}.json"
    if os.environ.get("SNAPSHOT_UPDATE") == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        snapshot.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    expected = json.loads(snapshot.read_text(encoding="utf-8"))
    assert set(got) == set(expected)
    for name in expected:
        assert got[name] == expected[name], name


def test_one_session_is_what_drf_would_render(alice, sessions):
    """The bytes of ``GET /api/v1/sessions/<id>`` equal DRF's serializer rendered by DRF's renderer."""
    for session in sessions:
        instance = Session.objects.select_related("user", "template", "agent").get(pk=session.pk)
        expected = JSONRenderer().render(SessionSerializer(instance).data)
        assert client_for(alice).get(f"/api/v1/sessions/{session.pk}").content == expected


def test_a_page_is_what_drf_would_render(alice, sessions):
    body = client_for(alice).get("/api/v1/sessions?page_size=100").content
    page = json.loads(body)
    instances = Session.objects.select_related("user", "template", "agent").filter(pk__in=[FIRST, SECOND, SHARED])
    by_id = {str(s.pk): SessionSerializer(s).data for s in instances}
    expected = {"count": 2, "next": None, "previous": None, "results": [by_id[r["id"]] for r in page["results"]]}
    assert [r["id"] for r in page["results"]] == [str(SECOND), str(FIRST)]  # alice's own, newest first
    assert body == JSONRenderer().render(expected)

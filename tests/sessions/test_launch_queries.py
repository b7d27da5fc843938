"""What one launch (``POST /api/v1/sessions``) asks the database, and that its broadcast
carries the response's own representation of the new session."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.test.utils import CaptureQueriesContext

from sessions_app.api.representation import represent_one
from sessions_app.models import SessionPeriod
from sessions_app.notify import user_group
from streamspace.api.renderers import JSONRenderer
from tests.support.clients import client_for

pytestmark = pytest.mark.django_db(transaction=True)

REPRESENTATION = 'SELECT "sessions_app_session"."id" AS "id"'  # the values() row of represent()


def test_a_launch_answers_its_session_as_written_places_once_and_broadcasts_its_response(alice, template, docker_agent):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(user_group(alice.pk), channel)
    client = client_for(alice)
    body = {
        "template": template.slug,
        "name": "Mine ✓",
        "resources": {"cpu_millicores": 250, "memory_mb": 300},
        "persistent_home": False,
        "idle_timeout_s": 600,
    }
    with CaptureQueriesContext(connection) as queries:
        response = client.post("/api/v1/sessions", body, format="json")
    assert response.status_code == 202, response.content
    sql = [q["sql"] for q in queries.captured_queries]
    assert not [q for q in sql if q.startswith(REPRESENTATION)], sql  # the session as written, not read back
    assert len([q for q in sql if "AS has_leader" in q]) == 1, sql  # placement, under the locks
    assert not [q for q in sql if q.startswith('UPDATE "sessions_app_sessionperiod"')], sql  # no period to close
    period = SessionPeriod.objects.get(session_id=response.json()["id"])
    assert (period.state, period.ended_at) == ("pending", None)
    message = async_to_sync(layer.receive)(channel)
    assert message["type"] == "session.update"
    assert json.loads(json.dumps(message["session"], cls=DjangoJSONEncoder)) == response.json()
    # the response is what the committed row represents, byte for byte
    assert JSONRenderer().render(represent_one(response.json()["id"])) == response.content


def test_a_refused_launch_leaves_no_quota_row_and_no_session(alice, template):
    """No agent serves the template: the refusal (503) rolls the launch's transaction back,
    the quota row it created and locked included."""
    from sessions_app.models import Session, UserQuota

    response = client_for(alice).post("/api/v1/sessions", {"template": template.slug}, format="json")
    assert response.status_code == 503 and response.json()["code"] == "no_agent"
    assert not UserQuota.objects.filter(user=alice).exists()
    assert not Session.objects.filter(user=alice).exists()


def test_a_launch_compiles_no_read_after_the_first(alice, template, docker_agent, monkeypatch, settings):
    """The launch's reads (template, group quotas, the locked quota row, the agent locks, the
    user's usage, the leader asked on commit) run as SQL compiled once per process; only its
    INSERTs are compiled per launch."""
    from django.core.cache import cache
    from django.db.models.sql.compiler import SQLCompiler

    settings.STREAMSPACE_USER_CACHE_S = 60  # the caller from the cache, as in production with Redis
    cache.clear()
    client = client_for(alice)
    assert client.post("/api/v1/sessions", {"template": template.slug}, format="json").status_code == 202
    compiled = []
    original = SQLCompiler.as_sql
    monkeypatch.setattr(SQLCompiler, "as_sql", lambda self, *a, **k: compiled.append(self) or original(self, *a, **k))
    with CaptureQueriesContext(connection) as queries:
        response = client.post("/api/v1/sessions", {"template": template.slug}, format="json")
    assert response.status_code == 202, response.content
    assert compiled == [], [type(c.query).__name__ for c in compiled]
    selects = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    assert len(selects) == 6, selects  # template, groups, quota lock, agent locks, placement, usage
    assert response.json()["template"] == template.slug and response.json()["state"] == "pending"
    cache.clear()


def test_a_launch_writes_its_four_rows_in_one_statement_under_the_locks(alice, template, docker_agent):
    """While the user's quota row is held the launch sends only SQL: the agent locks, the
    placement, the usage and, on PostgreSQL, one statement for the session, its first period,
    its audit event and its command (elsewhere one INSERT each)."""

    client = client_for(alice)
    assert client.post("/api/v1/sessions", {"template": template.slug}, format="json").status_code == 202
    with CaptureQueriesContext(connection) as queries:
        response = client.post("/api/v1/sessions", {"template": template.slug}, format="json")
    assert response.status_code == 202, response.content
    sql = [q["sql"] for q in queries.captured_queries]
    locked = next(i for i, q in enumerate(sql) if '"sessions_app_userquota"' in q)  # FOR UPDATE on PostgreSQL
    held = sql[locked : sql.index("COMMIT", locked)] if connection.vendor == "postgresql" else sql[locked:]
    writes = [q for q in held if q.startswith(("INSERT", "WITH"))]
    tables = ["sessions_app_session", "sessions_app_sessionperiod", "audit_auditevent", "agents_app_agentcommand"]
    if connection.vendor == "postgresql":
        assert len(writes) == 1, writes
        assert all(f'INSERT INTO "{table}"' in writes[0] for table in tables), writes
        assert len(held) == 5, held  # quota lock, agent locks, placement, usage, the rows
    else:
        assert [next(t for t in tables if f'INSERT INTO "{t}"' in w) for w in writes] == tables
    period = SessionPeriod.objects.get(session_id=response.json()["id"])
    assert (period.state, period.user_id, period.cpu_millicores) == (
        "pending",
        alice.pk,
        template.default_cpu_millicores,
    )

"""A ``values()`` query compiled once per process (``streamspace.api.prepared``).

The one-session read (``GET /api/v1/sessions/{id}``) runs through it: these check that it
answers what the queryset answers, for every kind of caller, with one statement and no
compilation after the first request.
"""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.db.models.sql.compiler import SQLCompiler
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from sessions_app.api.representation import session_rows
from sessions_app.api.views import session_queryset
from sessions_app.models import Session, Share
from streamspace.accounts.models import User
from streamspace.accounts.tokens import create_token
from streamspace.api.prepared import Placeholder, PreparedValues
from tests.support.clients import client_for
from tests.support.factories import make_session, make_user

pytestmark = pytest.mark.django_db


def expected(user: User, session: Session) -> list[dict]:
    return list(session_rows(session_queryset().visible_to(user).filter(pk=session.pk)))


def test_every_kind_of_caller_reads_what_the_queryset_gives(alice, bob, operator, template, docker_agent):
    session = make_session(alice, template, docker_agent)
    carol = make_user("carol")
    team = Group.objects.create(name="team")
    carol.groups.add(team)
    Share.objects.create(session=session, group=team, role="viewer")
    for user in (alice, bob, carol, operator):  # owner, stranger, grantee through a group, operator
        response = client_for(user).get(f"/api/v1/sessions/{session.pk}")
        rows = expected(user, session)
        assert response.status_code == (200 if rows else 404)
        if rows:
            assert response.json()["id"] == str(session.pk) and response.json()["user"] == "alice"
    assert [bool(expected(u, session)) for u in (alice, bob, carol, operator)] == [True, False, True, True]


def test_an_operators_token_without_the_admin_scope_reads_as_a_user(alice, operator, template, docker_agent):
    session = make_session(alice, template, docker_agent)
    _, key = create_token(operator, name="plain", scope="read")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get(f"/api/v1/sessions/{session.pk}").status_code == 404
    assert client_for(operator).get(f"/api/v1/sessions/{session.pk}").status_code == 200


def test_a_read_is_one_statement_compiled_once(alice, template, docker_agent, monkeypatch, settings):
    settings.STREAMSPACE_USER_CACHE_S = 60  # the user from the cache: the session's is the only query
    cache.clear()
    sessions = [make_session(alice, template, docker_agent) for _ in range(2)]
    client = client_for(alice)
    assert client.get(f"/api/v1/sessions/{sessions[0].pk}").status_code == 200  # compiles (at most) once
    compiled = []
    original = SQLCompiler.as_sql
    monkeypatch.setattr(SQLCompiler, "as_sql", lambda self, *a, **k: compiled.append(1) or original(self, *a, **k))
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/api/v1/sessions/{sessions[1].pk}")
    assert response.json()["id"] == str(sessions[1].pk)
    assert compiled == [] and len(queries) == 1
    cache.clear()


def test_a_stand_in_in_the_sql_text_is_refused():
    prepared = PreparedValues(
        lambda shape, *, name: Session.objects.extra(where=[f"name = '{name}'"]).values("id"),
        name=Placeholder(Session._meta.get_field("name"), "stand-in-7f3a"),
    )
    with pytest.raises(ImproperlyConfigured, match="in the SQL text"):
        prepared.rows(None, name="x")


def test_an_unknown_session_is_no_row(alice):
    assert client_for(alice).get(f"/api/v1/sessions/{uuid.uuid4()}").status_code == 404


def test_instances_are_the_querysets_objects_and_locks_stay_in_the_sql(alice, template, docker_agent):
    from django.db import transaction

    from sessions_app.models import UserQuota
    from streamspace.api.prepared import PreparedInstances

    UserQuota.objects.create(user=alice, max_sessions=3)
    prepared = PreparedInstances(
        UserQuota,
        lambda shape, *, user_id: UserQuota.objects.select_for_update().filter(user=user_id)[:1],
        user_id=Placeholder(User._meta.pk, -2_000_000_041),
    )
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        (found,) = prepared.instances(None, user_id=alice.pk)
        assert prepared.instances(None, user_id=-1) == []
    expected_row = UserQuota.objects.get(user=alice)
    assert found == expected_row and found._state.adding is False and found._state.db == "default"
    assert {f.attname: getattr(found, f.attname) for f in UserQuota._meta.concrete_fields} == {
        f.attname: getattr(expected_row, f.attname) for f in UserQuota._meta.concrete_fields
    }
    if connection.features.has_select_for_update:
        assert all(q["sql"].endswith("FOR UPDATE") for q in queries.captured_queries)
    found.max_sessions = 4
    found.save()  # an instance like any other: saved as an UPDATE of its row
    assert UserQuota.objects.get(user=alice).max_sessions == 4 and UserQuota.objects.count() == 1

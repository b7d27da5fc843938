"""New rows of different models in one statement (``streamspace.api.inserts``): the rows are
what ``save()`` writes, and on PostgreSQL they cost one round trip."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents_app.models import AgentCommand
from sessions_app import history
from sessions_app.models import Session, SessionPeriod
from streamspace.api.inserts import insert_together
from streamspace.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


NOW = timezone.now()


def rows(alice, template, docker_agent, name: str, now=NOW):
    session = Session(
        name=name,
        user=alice,
        template=template,
        agent=docker_agent,
        platform="docker",
        state="pending",
        cpu_millicores=250,
        memory_mb=300,
        idle_timeout_s=600,
        last_activity=now,
        state_changed_at=now,
    )
    period = history.first_period(session, "pending", now)
    event = AuditEvent(actor=alice, actor_repr="alice", action="session.create", target_id=str(session.pk))
    command = AgentCommand(agent=docker_agent, session=session, action="start_session", spec={"image": "x"})
    return session, period, event, command


def test_the_rows_are_what_save_writes_in_one_statement_on_postgresql(alice, template, docker_agent):
    saved = rows(alice, template, docker_agent, "saved")
    for instance in saved:
        instance.save(force_insert=True)
    together = rows(alice, template, docker_agent, "together")
    # The period before its session: foreign keys are checked when the transaction commits.
    with CaptureQueriesContext(connection) as queries:
        insert_together(together[1], together[0], together[2], together[3])
    assert len(queries) == (1 if connection.vendor == "postgresql" else 4)
    for mine, theirs in zip(together, saved, strict=True):
        assert mine.pk is not None and not mine._state.adding and mine._state.db == "default"
        model = type(mine)
        fields = [f.attname for f in model._meta.concrete_fields if not f.primary_key]
        read = model.objects.filter(pk=mine.pk).values(*fields).get()
        assert read == {f: getattr(mine, f) for f in fields}  # auto_now values kept on the instance
        other = model.objects.filter(pk=theirs.pk).values(*fields).get()
        differ = {f for f in fields if read[f] != other[f]}
        assert differ <= {"name", "created_at", "updated_at", "session_id", "target_id"}
    assert together[0].created_at is not None and together[2].created_at is not None


def test_a_failing_row_writes_none_of_them(alice, template, docker_agent):
    session, period, event, command = rows(alice, template, docker_agent, "broken")
    command.action = None  # NOT NULL: the last row fails
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_together(session, period, event, command)
    assert not Session.objects.filter(name="broken").exists()
    assert not AuditEvent.objects.filter(target_id=str(session.pk)).exists()
    assert not SessionPeriod.objects.filter(session_id=session.pk).exists()

"""Usage from the state history: what is recorded at each state change, and the report's
arithmetic (days, clipping, grouping) checked against hand computations."""

from __future__ import annotations

from datetime import UTC, date, datetime
from importlib import import_module

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from sessions_app import state, usage
from sessions_app.models import SessionPeriod, SessionState
from tests.support.clients import launch
from tests.support.factories import make_session, make_user

pytestmark = pytest.mark.django_db
S = SessionState


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def period(user, template, started, ended, *, state=S.RUNNING, cpu=1000, memory=1024, session=None):
    return SessionPeriod.objects.create(
        session=session,
        user=user,
        template=template,
        state=state,
        started_at=started,
        ended_at=ended,
        cpu_millicores=cpu,
        memory_mb=memory,
    )


def test_every_transition_closes_one_period_and_opens_the_next(alice, template):
    session = make_session(alice, template, state=S.PENDING, cpu_millicores=500, memory_mb=2048)
    for target in (S.STARTING, S.RUNNING, S.HIBERNATING, S.HIBERNATED, S.WAKING, S.RUNNING):
        state.transition(session, target)
    periods = list(SessionPeriod.objects.filter(session=session).order_by("started_at", "id"))
    assert [p.state for p in periods] == [S.STARTING, S.RUNNING, S.HIBERNATING, S.HIBERNATED, S.WAKING, S.RUNNING]
    for earlier, later in zip(periods, periods[1:], strict=False):
        assert earlier.ended_at == later.started_at  # they tile: no gap, no overlap
    assert [p.ended_at is None for p in periods] == [False] * 5 + [True]
    assert {(p.user_id, p.template_id, p.cpu_millicores, p.memory_mb) for p in periods} == {
        (alice.pk, template.pk, 500, 2048)
    }


def test_a_refused_transition_records_nothing(alice, template):
    session = make_session(alice, template, state=S.RUNNING)
    with pytest.raises(state.IllegalTransition):
        state.transition(session, S.WAKING)
    assert not SessionPeriod.objects.filter(session=session).exists()


def test_transition_many_records_each_session(alice, template):
    sessions = [make_session(alice, template, state=S.RUNNING) for _ in range(3)]
    state.transition_many(sessions, S.STOPPING)
    assert SessionPeriod.objects.filter(state=S.STOPPING, ended_at__isnull=True).count() == 3


def test_a_launch_opens_the_pending_period(alice_client, template, docker_agent):
    response = launch(alice_client, template.slug)
    assert response.status_code == 202, response.content
    (opened,) = SessionPeriod.objects.filter(session_id=response.json()["id"])
    assert (opened.state, opened.ended_at) == (S.PENDING, None)


def test_deleting_a_session_ends_its_open_period_and_keeps_the_history(alice, template):
    session = make_session(alice, template, state=S.PENDING)
    state.transition(session, S.STARTING)
    session.delete()
    (kept,) = SessionPeriod.objects.filter(user=alice)
    assert kept.session_id is None and kept.ended_at is not None


def test_hours_split_at_midnight_and_clipped_to_the_range(alice, template):
    # Running from 1 Nov 22:00 to 3 Nov 01:30 with 2 cores and 3 GiB, asked for 2–3 Nov.
    period(alice, template, at(1, 22), at(3, 1, 30), cpu=2000, memory=3072)
    rows = usage.report(date(2026, 11, 2), date(2026, 11, 3), "user")
    assert [(r.day, r.key, r.session_hours, r.cpu_hours, r.memory_gb_hours) for r in rows] == [
        (date(2026, 11, 2), "alice", 24.0, 48.0, 72.0),
        (date(2026, 11, 3), "alice", 1.5, 3.0, 4.5),
    ]


def test_only_states_that_hold_resources_accrue(alice, template):
    for n, name in enumerate(S.values):
        period(alice, template, at(5, n), at(5, n, 30), state=name)
    (row,) = usage.report(date(2026, 11, 5), date(2026, 11, 5), "user")
    # starting, running, hibernating, waking, stopping: five half hours.
    assert row.session_hours == pytest.approx(2.5)


def test_an_open_period_counts_up_to_now(alice, template):
    started = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    period(alice, template, started, None)
    before = (timezone.now() - started).total_seconds() / 3600
    (row,) = usage.report(started.date(), started.date(), "user")
    after = (timezone.now() - started).total_seconds() / 3600
    assert before <= row.session_hours <= after


def test_grouped_by_template_group_and_user(alice, bob, template):
    carol = make_user("carol")
    staff, lab = Group.objects.create(name="staff"), Group.objects.create(name="lab")
    alice.groups.add(staff, lab)
    bob.groups.add(staff)
    period(alice, template, at(7, 9), at(7, 11))  # 2 h
    period(bob, template, at(7, 9), at(7, 10))  # 1 h
    period(carol, template, at(7, 9), at(7, 13))  # 4 h, in no group
    by_group = {r.key: r.session_hours for r in usage.report(date(2026, 11, 7), date(2026, 11, 7), "group")}
    assert by_group == {"staff": 3.0, "lab": 2.0, usage.NO_GROUP: 4.0}
    by_template = {r.key: r.session_hours for r in usage.report(date(2026, 11, 7), date(2026, 11, 7), "template")}
    assert by_template == {template.slug: 7.0}
    mine = usage.report(date(2026, 11, 7), date(2026, 11, 7), "user", user=bob)
    assert [(r.key, r.session_hours) for r in mine] == [("bob", 1.0)]


def test_a_deleted_owner_is_reported_as_deleted(alice, template):
    ghost = make_user("ghost")
    period(ghost, template, at(8, 1), at(8, 2))
    ghost.delete()
    assert [(r.key, r.session_hours) for r in usage.report(date(2026, 11, 8), date(2026, 11, 8), "user")] == [
        (usage.DELETED, 1.0)
    ]


def test_a_seeded_month_matches_a_hand_computation(alice, bob, template):
    """Alice runs 2 h every day of November at 1 core / 2 GiB; bob 30 min on each Monday
    at 0.5 core / 1 GiB."""
    for day in range(1, 31):
        period(alice, template, at(day, 8), at(day, 10), cpu=1000, memory=2048)
        if date(2026, 11, day).weekday() == 0:
            period(bob, template, at(day, 8), at(day, 8, 30), cpu=500, memory=1024)
    rows = usage.report(date(2026, 11, 1), date(2026, 11, 30), "user")
    mondays = sum(1 for day in range(1, 31) if date(2026, 11, day).weekday() == 0)
    assert usage.totals(rows) == {
        "session_hours": 30 * 2 + mondays * 0.5,
        "cpu_hours": 30 * 2 * 1 + mondays * 0.5 * 0.5,
        "memory_gb_hours": 30 * 2 * 2 + mondays * 0.5 * 1,
    }
    assert len(rows) == 30 + mondays


def test_unknown_grouping_is_refused():
    with pytest.raises(ValueError, match="group_by"):
        usage.report(date(2026, 11, 1), date(2026, 11, 2), "planet")


def test_days_follow_the_site_time_zone(settings, alice, template):
    settings.TIME_ZONE = "Europe/Paris"  # UTC+1 in November
    period(alice, template, at(9, 22, 30), at(9, 23, 30))  # 23:30–00:30 Paris time
    rows = usage.report(date(2026, 11, 9), date(2026, 11, 10), "user")
    assert [(r.day, r.session_hours) for r in rows] == [(date(2026, 11, 9), 0.5), (date(2026, 11, 10), 0.5)]


def test_sessions_created_before_the_history_get_an_open_period_from_their_last_change(alice, template):
    from django.apps import apps

    migration = import_module("sessions_app.migrations.0006_state_history_and_icons")
    running = make_session(alice, template, state=S.RUNNING, idle_for_s=3600)
    make_session(alice, template, state=S.STOPPED)
    migration.open_current_periods(apps, None)
    (opened,) = SessionPeriod.objects.all()
    assert (opened.session_id, opened.state, opened.started_at, opened.ended_at) == (
        running.pk,
        S.RUNNING,
        running.state_changed_at,
        None,
    )

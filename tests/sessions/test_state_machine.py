"""Every transition of the session state machine, legal and illegal."""

from __future__ import annotations

import itertools

import pytest

from sessions_app.models import Session, SessionState
from sessions_app.state import TRANSITIONS, IllegalTransition, transition
from tests.support.factories import make_session

pytestmark = pytest.mark.django_db
STATES = list(SessionState.values)

EXPECTED_LEGAL = {
    ("pending", "starting"),
    ("pending", "running"),
    ("pending", "stopping"),
    ("pending", "failed"),
    ("starting", "running"),
    ("starting", "stopping"),
    ("starting", "failed"),
    ("running", "hibernating"),
    ("running", "stopping"),
    ("running", "failed"),
    ("hibernating", "hibernated"),
    ("hibernating", "stopping"),
    ("hibernating", "failed"),
    ("hibernated", "waking"),
    ("hibernated", "stopping"),
    ("hibernated", "failed"),
    ("waking", "running"),
    ("waking", "stopping"),
    ("waking", "failed"),
    ("stopping", "stopped"),
    ("stopping", "failed"),
    ("failed", "stopping"),
}


def test_table_matches_the_documented_machine():
    legal = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert legal == EXPECTED_LEGAL


@pytest.fixture
def session(alice, template):
    return make_session(alice, template, state="pending")


@pytest.mark.parametrize("source,target", list(itertools.product(STATES, STATES)))
def test_transition(session, source, target):
    Session.objects.filter(pk=session.pk).update(state=source)
    session.refresh_from_db()
    if (source, target) in EXPECTED_LEGAL:
        transition(session, target, message="why")
        stored = Session.objects.get(pk=session.pk)
        assert stored.state == target and stored.status_message == "why"
    else:
        with pytest.raises(IllegalTransition) as info:
            transition(session, target)
        assert info.value.status_code == 409 and info.value.code == "illegal_transition"
        assert Session.objects.get(pk=session.pk).state == source


def test_stale_writer_loses_the_race(session):
    stale = Session.objects.get(pk=session.pk)
    transition(session, SessionState.STARTING)
    with pytest.raises(IllegalTransition):
        transition(stale, SessionState.FAILED)  # stale copy still thinks "pending"
    assert Session.objects.get(pk=session.pk).state == SessionState.STARTING

"""A request that meets a lost PostgreSQL or Redis connection answers 503
``dependency_unavailable`` with ``Retry-After`` (a restart or failover is the client's cue to
retry), and is still counted as a dependency error; any other error stays a 500."""

from __future__ import annotations

import uuid

import pytest
import redis
from django.db import OperationalError
from rest_framework.test import APIClient

from sessions_app.api import views
from streamspace import metrics
from tests.support.factories import make_user

pytestmark = pytest.mark.django_db


def counted(dependency: str) -> float:
    return metrics.DEPENDENCY_ERRORS.labels(dependency)._value.get()


@pytest.fixture
def alice_client():
    alice = make_user("alice")
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(alice)
    return client, uuid.uuid4()  # the view is replaced: no row is read


@pytest.mark.parametrize(
    ("error", "dependency", "named"),
    [
        (OperationalError("server closed the connection unexpectedly"), "database", "the database"),
        (redis.ConnectionError("Connection refused"), "redis", "Redis"),
    ],
)
def test_a_lost_dependency_is_a_503_with_retry_after_and_is_counted(
    alice_client, monkeypatch, error, dependency, named
):
    client, session_id = alice_client
    metrics.register_collectors()

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(views.SessionDetailView, "get", fail)
    before = counted(dependency)
    response = client.get(f"/api/v1/sessions/{session_id}")
    assert response.status_code == 503
    assert response.json() == {
        "code": "dependency_unavailable",
        "detail": f"{named} is unavailable for a moment; retry",
    }
    assert response["Retry-After"] == "2"
    assert counted(dependency) == before + 1


def test_any_other_error_stays_a_500(alice_client, monkeypatch):
    client, session_id = alice_client

    def fail(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(views.SessionDetailView, "get", fail)
    assert client.get(f"/api/v1/sessions/{session_id}").status_code == 500

"""Race-free quotas and list performance on real PostgreSQL."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sessions_app.models import Session, UserQuota
from tests.conftest import client_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def concurrent_launches(user, count: int, body: dict) -> list[int]:
    """Fire ``count`` launches at once from separate threads (each with its own DB connection)."""
    barrier = threading.Barrier(count)
    statuses: list[int] = []
    codes: list[str] = []
    lock = threading.Lock()

    # Clients (and their JWTs) are made up front: before the barrier no thread needs a
    # database connection, so 30 threads cannot starve a 20-connection pool while waiting.
    clients = [client_for(user) for _ in range(count)]

    def worker(client):
        try:
            barrier.wait(timeout=30)
            response = client.post("/api/v1/sessions", body, format="json")
            with lock:
                statuses.append(response.status_code)
                if response.status_code != 202:
                    codes.append(response.json()["code"])
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(statuses) == count
    assert set(codes) <= {"quota_exceeded"}
    return statuses


def test_database_is_postgres():
    assert connection.vendor == "postgresql"


@pytest.mark.parametrize(
    "limits,resources",
    [
        ({"max_sessions": 3}, {}),
        ({"max_sessions": 100, "max_cpu_millicores": 1500}, {"cpu_millicores": 500}),
        ({"max_sessions": 100, "max_memory_mb": 768}, {"memory_mb": 256}),
    ],
    ids=["sessions", "cpu", "memory"],
)
def test_thirty_concurrent_launches_respect_quota(alice, template, docker_agent, limits, resources):
    UserQuota.objects.create(user=alice, **limits)
    statuses = concurrent_launches(alice, 30, {"template": "xfce", "resources": resources})
    assert statuses.count(202) == 3
    assert statuses.count(403) == 27
    assert Session.objects.filter(user=alice).count() == 3


def test_session_list_with_ten_thousand_sessions_has_no_n_plus_one(alice, bob, template, docker_agent):
    now = timezone.now()
    rows = [
        Session(
            id=uuid.uuid4(),
            name=f"s{i}",
            user=alice if i % 2 else bob,
            template=template,
            agent=docker_agent,
            state="running",
            platform="docker",
            cpu_millicores=100,
            memory_mb=100,
            idle_timeout_s=60,
            last_activity=now,
            state_changed_at=now,
        )
        for i in range(10_000)
    ]
    Session.objects.bulk_create(rows, batch_size=2000)
    client = client_for(alice)
    client.get("/api/v1/sessions?page_size=10")  # warm caches (content types, auth)
    for page_size in (10, 200):
        with CaptureQueriesContext(connection) as queries:
            response = client.get(f"/api/v1/sessions?page_size={page_size}&page=3")
        assert response.status_code == 200
        body = response.json()
        assert body["count"] == 5000 and len(body["results"]) == page_size
        # user (JWT auth) + count + page: independent of the page size.
        assert len(queries) <= 3, [q["sql"] for q in queries]
    operator_rows = client_for(alice)
    assert operator_rows.get("/api/v1/sessions?all=1").json()["count"] == 5000

"""Race-free quotas and list performance on real PostgreSQL."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sessions_app.models import Session, UserQuota
from tests.support.clients import client_for

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


def test_racing_claimers_send_each_pending_command_exactly_once(alice, template, docker_agent):
    """Four threads claim the same agent's 40 pending commands at once (PostgreSQL: one
    ``UPDATE ... FOR UPDATE SKIP LOCKED ... RETURNING`` each): every command goes to exactly
    one claimer, once."""
    from agents_app import dispatch
    from agents_app.models import AgentCommand
    from tests.support.factories import make_leader, make_session

    make_leader(docker_agent)
    sessions = [make_session(alice, template, docker_agent) for _ in range(40)]
    AgentCommand.objects.bulk_create(
        [
            AgentCommand(agent=docker_agent, session=s, action="stop_session", spec={"n": i})
            for i, s in enumerate(sessions)
        ]
    )
    barrier = threading.Barrier(4)
    claimed: list[list[str]] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(5):
                mine = dispatch._claim_pending(docker_agent.pk, "leader-1")
                with lock:
                    claimed.append([str(c.pk) for c in mine])
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    everything = [pk for batch in claimed for pk in batch]
    assert len(everything) == 40 and len(set(everything)) == 40
    rows = AgentCommand.objects.filter(agent=docker_agent)
    assert set(rows.values_list("state", flat=True)) == {"sent"}
    assert set(rows.values_list("attempts", flat=True)) == {1}
    assert set(rows.values_list("instance_id", flat=True)) == {"leader-1"}
    assert dispatch._claim_pending(docker_agent.pk, "leader-1") == []  # nothing is left


def test_a_claimed_command_carries_what_the_update_wrote(alice, template, docker_agent):
    from agents_app import dispatch
    from agents_app.models import AgentCommand
    from tests.support.factories import make_session

    session = make_session(alice, template, docker_agent)
    created = AgentCommand.objects.create(
        agent=docker_agent, session=session, action="start_session", spec={"image": "x", "env": {"A": "1"}}
    )
    (claimed,) = dispatch._claim_pending(docker_agent.pk, "leader-9")
    assert claimed.pk == created.pk and claimed.spec == {"image": "x", "env": {"A": "1"}}
    assert (claimed.state, claimed.attempts, claimed.instance_id) == ("sent", 1, "leader-9")
    assert claimed.sent_at is not None and dispatch.command_frame_payload(claimed)["attempt"] == 1


def test_concurrent_launches_never_take_an_agent_past_its_capacity(template, docker_agent):
    """Twenty users launch at once onto one agent that reported room for 4 sessions of this
    size by CPU (and 10 by count): exactly 4 are placed, the rest are told no_capacity."""
    from agents_app.models import AgentInstance
    from tests.support.factories import make_user

    AgentInstance.objects.filter(agent=docker_agent).update(
        capacity={"cpu_millicores": 2000, "memory_mb": 65536, "sessions": 10}
    )
    users = [make_user(f"racer{i}") for i in range(20)]
    barrier = threading.Barrier(len(users))
    clients = [client_for(user) for user in users]
    answers: list[tuple[int, str]] = []
    lock = threading.Lock()

    def worker(client):
        try:
            barrier.wait(timeout=30)
            response = client.post(
                "/api/v1/sessions", {"template": "xfce", "resources": {"cpu_millicores": 500}}, format="json"
            )
            with lock:
                answers.append((response.status_code, response.json().get("code", "")))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(answers).count((202, "")) == 4, answers
    assert [a for a in answers if a[0] != 202] == [(503, "no_capacity")] * 16
    assert Session.objects.filter(agent=docker_agent).count() == 4


def test_a_command_overtaken_by_a_later_one_of_its_session_is_never_sent(alice, template, docker_agent):
    """A wake returned to ``pending`` (its leader went away unacked) after the stop that followed
    it went out: sending the wake now would start a workload for a stopped session."""
    from datetime import timedelta

    from agents_app import dispatch
    from agents_app.models import AgentCommand
    from tests.support.factories import make_session

    session, other = make_session(alice, template, docker_agent), make_session(alice, template, docker_agent)
    now = timezone.now()
    wake = AgentCommand.objects.create(agent=docker_agent, session=session, action="wake_session")
    stop = AgentCommand.objects.create(agent=docker_agent, session=session, action="stop_session", state="acked")
    unrelated = AgentCommand.objects.create(agent=docker_agent, session=other, action="stop_session")
    AgentCommand.objects.filter(pk=wake.pk).update(created_at=now - timedelta(seconds=2))
    AgentCommand.objects.filter(pk=stop.pk).update(created_at=now - timedelta(seconds=1))
    claimed = dispatch._claim_pending(docker_agent.pk, "leader-1")
    assert [c.pk for c in claimed] == [unrelated.pk]
    wake.refresh_from_db()
    assert wake.state == "expired" and wake.error == dispatch.SUPERSEDED
    stop.refresh_from_db()
    assert stop.state == "acked"
    # Both still pending: oldest first, nothing expired.
    first = AgentCommand.objects.create(agent=docker_agent, session=other, action="wake_session")
    second = AgentCommand.objects.create(agent=docker_agent, session=other, action="stop_session")
    assert [c.pk for c in dispatch._claim_pending(docker_agent.pk, "leader-1")] == [first.pk, second.pk]

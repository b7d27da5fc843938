"""``GET /api/v1/usage``: who sees what, the JSON and CSV shapes, and bad queries (400)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from sessions_app.models import SessionPeriod

pytestmark = pytest.mark.django_db
URL = "/api/v1/usage"
NOVEMBER = {"from": "2026-11-01", "to": "2026-11-30"}


@pytest.fixture
def seeded(alice, bob, template):
    def run(user, day, hours, cpu=1000, memory=1024):
        SessionPeriod.objects.create(
            user=user,
            template=template,
            state="running",
            started_at=datetime(2026, 11, day, 8, tzinfo=UTC),
            ended_at=datetime(2026, 11, day, 8 + hours, tzinfo=UTC),
            cpu_millicores=cpu,
            memory_mb=memory,
        )

    run(alice, 2, 3, cpu=2000, memory=4096)
    run(bob, 3, 1)


def test_an_operator_sees_everyone(operator_client, seeded):
    body = operator_client.get(URL, NOVEMBER).json()
    assert body["scope"] == "all" and body["group_by"] == "user"
    assert body["rows"] == [
        {"day": "2026-11-02", "user": "alice", "session_hours": 3.0, "cpu_hours": 6.0, "memory_gb_hours": 12.0},
        {"day": "2026-11-03", "user": "bob", "session_hours": 1.0, "cpu_hours": 1.0, "memory_gb_hours": 1.0},
    ]
    assert body["totals"] == {"session_hours": 4.0, "cpu_hours": 7.0, "memory_gb_hours": 13.0}


def test_an_admin_sees_everyone_by_template(admin_client, seeded, template):
    body = admin_client.get(URL, {**NOVEMBER, "group_by": "template"}).json()
    assert {(r["day"], r["template"]) for r in body["rows"]} == {
        ("2026-11-02", template.slug),
        ("2026-11-03", template.slug),
    }


def test_a_user_sees_only_their_own(bob_client, seeded):
    body = bob_client.get(URL, NOVEMBER).json()
    assert body["scope"] == "own"
    assert [(r["user"], r["session_hours"]) for r in body["rows"]] == [("bob", 1.0)]
    # Grouping differently never widens it.
    by_group = bob_client.get(URL, {**NOVEMBER, "group_by": "group"}).json()
    assert by_group["totals"]["session_hours"] == 1.0


def test_signing_in_is_required(anon_client):
    assert anon_client.get(URL).status_code == 401


def test_the_default_period_is_this_month(alice_client):
    from django.utils import timezone

    today = timezone.localdate()
    body = alice_client.get(URL).json()
    assert (body["from"], body["to"]) == (today.replace(day=1).isoformat(), today.isoformat())


def test_csv_export(operator_client, seeded):
    response = operator_client.get(URL, {**NOVEMBER, "format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="usage-2026-11-01-2026-11-30-user.csv"'
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert rows == [
        {"day": "2026-11-02", "user": "alice", "session_hours": "3.0", "cpu_hours": "6.0", "memory_gb_hours": "12.0"},
        {"day": "2026-11-03", "user": "bob", "session_hours": "1.0", "cpu_hours": "1.0", "memory_gb_hours": "1.0"},
    ]


def test_csv_by_accept_header(operator_client, seeded):
    response = operator_client.get(URL, NOVEMBER, HTTP_ACCEPT="text/csv")
    assert response["Content-Type"].startswith("text/csv")
    assert response.content.decode().splitlines()[0] == "day,user,session_hours,cpu_hours,memory_gb_hours"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"from": "2026-13-01"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-02-30"}, "to"),
        ({"from": "2026-11-10", "to": "2026-11-01"}, "from"),
        ({"from": "2024-01-01", "to": "2026-01-01"}, "to"),
        ({"group_by": "planet"}, "group_by"),
        ({"format": "xml"}, "format"),
    ],
)
def test_bad_queries_are_400_naming_the_field(operator_client, query, field):
    response = operator_client.get(URL, query)
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["code"] == "invalid"
    assert field in str(response.json())


def test_a_bad_query_asking_for_csv_still_gets_a_json_error(operator_client):
    response = operator_client.get(URL, {"format": "csv", "group_by": "planet"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_options_asking_for_csv_gets_json_metadata(operator_client):
    response = operator_client.options(URL, HTTP_ACCEPT="text/csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")

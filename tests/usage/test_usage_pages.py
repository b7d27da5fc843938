"""The usage pages: a user's own month and the operators' report, drawn as an SVG chart and a
table that agree with the API; bad queries are a 400 page, not a 500."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.test import Client

from sessions_app.models import SessionPeriod

pytestmark = pytest.mark.django_db
NOVEMBER = {"from": "2026-11-01", "to": "2026-11-30"}


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def seeded(alice, bob, template):
    for user, day, hours in ((alice, 2, 3), (alice, 4, 1), (bob, 3, 2)):
        SessionPeriod.objects.create(
            user=user,
            template=template,
            state="running",
            started_at=datetime(2026, 11, day, 8, tzinfo=UTC),
            ended_at=datetime(2026, 11, day, 8 + hours, tzinfo=UTC),
            cpu_millicores=1000,
            memory_mb=1024,
        )


def chart_values(html: str) -> list[float]:
    """The non-empty bars' values, as pygal writes them into the SVG (``<desc class="value">``)."""
    return [float(v) for v in re.findall(r'<desc class="value">([0-9.]+)</desc>', html) if float(v)]


def test_my_usage_shows_only_mine(alice, seeded):
    response = signed_in(alice).get("/usage/", NOVEMBER)
    html = response.content.decode()
    assert response.status_code == 200
    assert sorted(chart_values(html)) == [1.0, 3.0]
    assert 'data-usage-key="xfce"' in html and "bob" not in html
    assert 'href="/api/v1/usage?from=2026-11-01&amp;to=2026-11-30&amp;group_by=template&amp;format=csv"' in html
    assert "<script" not in html.split("data-usage-chart", 1)[1].split("</figure>", 1)[0]


def test_the_operators_report_groups_by_user(operator, seeded):
    html = signed_in(operator).get("/ops/usage/", {**NOVEMBER, "group_by": "user"}).content.decode()
    assert sorted(chart_values(html)) == [1.0, 2.0, 3.0]
    totals = dict(
        re.findall(r'data-usage-key="(\w+)"><td>\w+</td><td class="num" data-col="session_hours">([0-9.]+)', html)
    )
    assert totals == {"alice": "4.00", "bob": "2.00"}


def test_the_metric_switches_what_is_drawn(operator, seeded):
    html = signed_in(operator).get("/ops/usage/", {**NOVEMBER, "metric": "memory_gb_hours"}).content.decode()
    assert 'data-metric="memory_gb_hours"' in html and "Memory GB-hours" in html


def test_a_user_cannot_open_the_operators_report(alice):
    assert signed_in(alice).get("/ops/usage/").status_code in (302, 403)


@pytest.mark.parametrize(
    "query", [{"from": "nope"}, {"from": "2026-11-30", "to": "2026-11-01"}, {"metric": "watts"}, {"group_by": "x"}]
)
def test_bad_queries_are_a_400_page(operator, query):
    response = signed_in(operator).get("/ops/usage/", query)
    assert response.status_code == 400
    assert b"data-usage-errors" in response.content


def test_the_nav_links_my_usage(alice):
    assert b'href="/usage/"' in signed_in(alice).get("/").content

"""The usage chart in Chromium for a seeded month: every bar's value and drawn height match a
hand computation, and the table's totals agree with the chart."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest

from sessions_app.models import SessionPeriod
from tests.support.browser import chromium, shoot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser() -> Iterator:
    with chromium() as instance:
        yield instance


def test_the_chart_of_a_seeded_month_matches_a_hand_computation(browser, live_server, alice, bob, template):
    # Alice: on day d of November 2026, a session runs (d % 5) + 1 hours from 06:00 at 1 core;
    # one session also runs across midnight 29→30 Nov, 22:00–02:00. Bob's must not show.
    for day in range(1, 30):
        SessionPeriod.objects.create(
            user=alice,
            template=template,
            state="running",
            started_at=datetime(2026, 11, day, 6, tzinfo=UTC),
            ended_at=datetime(2026, 11, day, 6 + day % 5 + 1, tzinfo=UTC),
            cpu_millicores=1000,
            memory_mb=1024,
        )
    SessionPeriod.objects.create(
        user=alice,
        template=template,
        state="running",
        started_at=datetime(2026, 11, 29, 22, tzinfo=UTC),
        ended_at=datetime(2026, 11, 30, 2, tzinfo=UTC),
        cpu_millicores=1000,
        memory_mb=1024,
    )
    SessionPeriod.objects.create(
        user=bob,
        template=template,
        state="running",
        started_at=datetime(2026, 11, 3, 0, tzinfo=UTC),
        ended_at=datetime(2026, 11, 3, 12, tzinfo=UTC),
        cpu_millicores=1000,
        memory_mb=1024,
    )
    expected = {date(2026, 11, day).strftime("%d %b"): float(day % 5 + 1) for day in range(1, 30)}
    expected["29 Nov"] += 2.0
    expected["30 Nov"] = 2.0

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, live_server.url, "alice", "pw-alice")
    page.goto(f"{live_server.url}/usage/?from=2026-11-01&to=2026-11-30")
    bars = page.locator("[data-usage-chart] g.bar").evaluate_all(
        """bars => bars.map(bar => ({
            label: bar.querySelector('desc.x_label').textContent,
            value: parseFloat(bar.querySelector('desc.value').textContent),
            height: bar.querySelector('rect').getBoundingClientRect().height,
        }))"""
    )
    drawn = {bar["label"]: bar["value"] for bar in bars if bar["value"]}
    assert drawn == expected
    per_hour = [bar["height"] / bar["value"] for bar in bars if bar["value"]]
    assert max(per_hour) - min(per_hour) < 0.01 * max(per_hour), "bar heights are not proportional to the values"
    total = page.locator("[data-usage-total] [data-col=session_hours]").inner_text()
    assert float(total) == sum(expected.values())
    shoot(page, "usage-month")

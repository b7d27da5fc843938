"""Usage pages: a user's own (``/usage/``) and everyone's on the Operations pages
(``/ops/usage/``), as a chart and a table, with the CSV from ``GET /api/v1/usage``.

Both read the same report as the API (``sessions_app.usage``) and validate their query with
the API's :class:`~sessions_app.api.usage_views.UsageQuery`, so the page, the API and the CSV
always agree. The chart is an SVG drawn on the server by pygal: no JavaScript, no build step.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree

import pygal
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET
from pygal.style import Style

from sessions_app import usage
from sessions_app.api.usage_views import UsageQuery
from streamspace.portal.ops_views import operator_required

METRICS = {
    "session_hours": "Session-hours",
    "cpu_hours": "CPU-hours",
    "memory_gb_hours": "Memory GB-hours",
}
MAX_SERIES = 8
OTHERS = "(others)"
CHART_STYLE = Style(
    background="transparent",
    plot_background="transparent",
    font_family="system-ui, sans-serif",
    colors=("#0f7b6c", "#2b6cb0", "#d69e2e", "#9f7aea", "#e53e3e", "#38a169", "#dd6b20", "#718096", "#a0aec0"),
)


def chart(rows: list[usage.UsageRow], first: date, last: date, metric: str) -> str:
    """A stacked bar per day of ``metric``, one series per key (the largest
    :data:`MAX_SERIES`, the rest summed as ``(others)``), as inline SVG markup."""
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    totals: dict[str, float] = {}
    for row in rows:
        totals[row.key] = totals.get(row.key, 0.0) + getattr(row, metric)
    shown = sorted(totals, key=lambda key: (-totals[key], key))[:MAX_SERIES]
    series: dict[str, dict[date, float]] = {key: {} for key in shown}
    for row in rows:
        key = row.key if row.key in series else OTHERS
        values = series.setdefault(key, {})
        values[row.day] = values.get(row.day, 0.0) + getattr(row, metric)
    plot = pygal.StackedBar(
        style=CHART_STYLE,
        height=320,
        width=900,
        js=[],  # pygal's tooltips load a script from the network; the chart needs none
        disable_xml_declaration=True,
        x_label_rotation=-45 if len(days) > 14 else 0,
        show_minor_x_labels=False,
        legend_at_bottom=True,
        print_zeroes=False,
        y_title=METRICS[metric],
        no_data_text="No usage in this period",
    )
    plot.x_labels = [day.strftime("%d %b") for day in days]
    plot.x_labels_major = plot.x_labels[:: max(1, len(days) // 10)]
    for key, values in series.items():
        plot.add(key, [round(values[day], 4) if day in values else None for day in days])
    svg = plot.render_tree()
    # pygal embeds its configuration in a <script> for its optional tooltip code; the page
    # runs none, so the chart is served without it (nothing for a CSP to refuse).
    for parent in svg.iter():
        for script in [child for child in parent if child.tag in ("script", "{http://www.w3.org/2000/svg}script")]:
            parent.remove(script)
    return ElementTree.tostring(svg, encoding="unicode")


def _page(request: HttpRequest, template: str, *, everyone: bool, context: dict[str, Any]) -> HttpResponse:
    query = UsageQuery(data=request.GET)
    metric = request.GET.get("metric", "session_hours")
    if not query.is_valid() or metric not in METRICS:
        errors = {
            **query.errors,
            **({"metric": [f"Choose one of {', '.join(METRICS)}."]} if metric not in METRICS else {}),
        }
        return render(request, template, {**context, "errors": errors, "metrics": METRICS}, status=400)
    first, last = query.validated_data["from"], query.validated_data["to"]
    group_by = query.validated_data["group_by"] if everyone else request.GET.get("group_by", "template")
    if group_by not in usage.GROUP_BY:
        group_by = "template"
    rows = usage.report(first, last, group_by, user=None if everyone else request.user)
    by_key: dict[str, dict[str, float]] = {}
    for row in rows:
        sums = by_key.setdefault(row.key, dict.fromkeys(usage.COLUMNS, 0.0))
        for column in usage.COLUMNS:
            sums[column] += getattr(row, column)
    params = {"from": first.isoformat(), "to": last.isoformat(), "group_by": group_by}
    return render(
        request,
        template,
        {
            **context,
            "first": first,
            "last": last,
            "group_by": group_by,
            "group_choices": usage.GROUP_BY if everyone else ("template", "user"),
            "metric": metric,
            "metric_label": METRICS[metric],
            "metrics": METRICS,
            "chart": chart(rows, first, last, metric),
            "keys": sorted(by_key.items()),
            "totals": usage.totals(rows),
            "csv_url": f"{reverse('usage')}?{urlencode({**params, 'format': 'csv'})}",
        },
    )


@require_GET
@login_required
def my_usage(request: HttpRequest) -> HttpResponse:
    """The signed-in user's usage (this month unless asked otherwise), by template."""
    return _page(request, "portal/usage.html", everyone=False, context={"nav_active": "usage"})


@require_GET
@operator_required
def ops_usage(request: HttpRequest) -> HttpResponse:
    """Everyone's usage by user, group or template."""
    return _page(request, "portal/ops/usage.html", everyone=True, context={"nav_active": "ops", "ops_section": "usage"})

"""Agent gauges for Prometheus, computed when ``/metrics`` is scraped (deploy/prometheus/alerts.yml).

The truth about connected replicas is presence in Redis (heartbeats, docs/architecture.md §8); the
database mirror says which replicas the control plane still *believes* connected. Reading
both at scrape time gives the numbers the alert rules need without any bookkeeping on the
hub's hot path:

- ``streamspace_agent_leaders``: live replicas reporting ``is_leader`` (should be exactly 1)
- ``streamspace_agent_instances``: live replicas (leader + followers)
- ``streamspace_agent_stale_instances``: replicas the database marks connected although their
  heartbeat is older than three intervals (the stale-agent sweep should clear them)
- ``streamspace_agent_pending_commands``: commands waiting for a leader or for an ack

Every control-plane replica reports the same values; rules aggregate with ``max by (agent_id)``.

Observed by the replica where the event happens (sum across replicas):

- ``streamspace_agent_command_seconds{action, outcome}``: from a command's creation to its
  result (queueing, delivery and the agent's work: what a user waits for)
- ``streamspace_hub_agent_connections{platform}``: agent sockets registered on this replica
  (a replica's share of the reconnect herd shows here)
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from prometheus_client import Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from agents_app.hub import presence
from agents_app.models import Agent, AgentCommand, AgentInstance, CommandState

LABELS = ["agent_id", "platform"]

COMMAND_SECONDS = Histogram(
    "streamspace_agent_command_seconds",
    "Seconds from a command's creation to its result, by action and outcome (ok or failed).",
    ["action", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
HUB_CONNECTIONS = Gauge(
    "streamspace_hub_agent_connections", "Agent sockets registered on this control-plane replica.", ["platform"]
)


def _families() -> dict[str, GaugeMetricFamily]:
    return {
        "leaders": GaugeMetricFamily(
            "streamspace_agent_leaders", "Connected replicas of the agent that hold its leader lease.", labels=LABELS
        ),
        "instances": GaugeMetricFamily(
            "streamspace_agent_instances", "Connected replicas of the agent (leader and followers).", labels=LABELS
        ),
        "stale": GaugeMetricFamily(
            "streamspace_agent_stale_instances",
            "Replicas marked connected in the database without a heartbeat for three intervals.",
            labels=LABELS,
        ),
        "pending": GaugeMetricFamily(
            "streamspace_agent_pending_commands",
            "Commands not yet acknowledged by the agent (pending or sent).",
            labels=LABELS,
        ),
    }


class AgentCollector:
    """Per enabled agent: leaders, live and stale replicas, unacknowledged commands."""

    def describe(self) -> Iterator[Metric]:
        # Names only: registration must not touch the database.
        yield from _families().values()

    def collect(self) -> Iterator[Metric]:
        families = _families()
        agents = list(Agent.objects.filter(enabled=True).values_list("agent_id", "platform"))
        believed: dict[str, set[str]] = {}  # agent_id -> instances the database marks connected
        for agent_id, instance_id in AgentInstance.objects.filter(connected=True, agent__enabled=True).values_list(
            "agent__agent_id", "instance_id"
        ):
            believed.setdefault(agent_id, set()).add(instance_id)
        pending = dict(
            AgentCommand.objects.filter(state__in=[CommandState.PENDING, CommandState.SENT], agent__enabled=True)
            .order_by()  # no Meta.ordering in the GROUP BY
            .values("agent__agent_id")
            .annotate(n=Count("id"))
            .values_list("agent__agent_id", "n")
        )
        for agent_id, platform in agents:
            live = presence.connections(agent_id)
            labels = [agent_id, platform]
            families["leaders"].add_metric(labels, sum(1 for info in live.values() if info.get("is_leader")))
            families["instances"].add_metric(labels, len(live))
            families["stale"].add_metric(labels, len(believed.get(agent_id, set()) - live.keys()))
            families["pending"].add_metric(labels, pending.get(agent_id, 0))
        yield from families.values()

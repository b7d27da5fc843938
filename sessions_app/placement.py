"""Placement: which agent runs a new session, and which templates some agent can serve now.

Placement belongs to the session app because it weighs sessions (an agent's load is its
sessions in an active state); the agent app only stores agents, instances and commands.
The launch and the catalog read agents with the same statement and judge them with the
same rule (:mod:`sessions_app.availability`), so a template the catalog offers is one a
launch places, and a refused launch gives the reason the catalog shows.
"""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings

from agents_app.models import Agent, AgentCommand, AgentInstance, CommandState
from agents_app.services import Route
from sessions_app.availability import (
    Availability,
    FeatureMissing,
    ImageMissing,
    NoAgent,
    NoCapacity,
    decide,
    platforms_of,
)
from sessions_app.models import ACTIVE_STATES, RESOURCE_STATES, Session
from streamspace.api.prepared import PreparedValues

__all__ = [
    "CatalogAvailability",
    "FeatureMissing",
    "ImageMissing",
    "NoAgent",
    "NoCapacity",
    "candidates",
    "direct_route",
    "lock_agents",
    "select_agent",
]


@functools.cache
def _candidates_sql(platform_count: int, strategy: str) -> str:
    """Every enabled agent of the platforms (any platform when ``platform_count`` is 0), in
    placement order for ``strategy`` (spread: least loaded first; pack: most loaded first),
    with what the rule and :func:`direct_route` need. The candidates' sessions are read in
    one pass (``held``), which gives each agent's load and the CPU and memory it holds."""
    agent, instance = Agent._meta.db_table, AgentInstance._meta.db_table
    command, session = AgentCommand._meta.db_table, Session._meta.db_table
    connected = f"FROM {instance} i WHERE i.agent_id = a.id AND i.connected"
    leader = f"{connected} AND i.is_leader"
    newest = f"{leader} AND i.channel_name <> '' ORDER BY i.connected_at DESC LIMIT 1"
    active = ", ".join(["%s"] * len(ACTIVE_STATES))
    holding = ", ".join(["%s"] * len(RESOURCE_STATES))
    platforms = f" AND {{}}.platform IN ({', '.join(['%s'] * platform_count)})" if platform_count else ""
    return f"""
SELECT a.*,
    EXISTS (SELECT 1 {leader}) AS has_leader,
    EXISTS (SELECT 1 {connected}) AS has_replica,
    COALESCE(held.sessions, 0) AS load,
    COALESCE(held.cpu, 0) AS cpu_used,
    COALESCE(held.memory, 0) AS memory_used,
    (SELECT i.capacity {connected} ORDER BY i.is_leader DESC, i.connected_at DESC LIMIT 1) AS leader_capacity,
    (SELECT i.instance_id {newest}) AS leader_instance_id,
    (SELECT i.channel_name {newest}) AS leader_channel,
    EXISTS (SELECT 1 FROM {command} c WHERE c.agent_id = a.id AND c.state = %s) AS has_pending
FROM {agent} a
LEFT JOIN (
    SELECT s.agent_id,
        COUNT(*) AS sessions,
        SUM(CASE WHEN s.state IN ({holding}) THEN s.cpu_millicores ELSE 0 END) AS cpu,
        SUM(CASE WHEN s.state IN ({holding}) THEN s.memory_mb ELSE 0 END) AS memory
    FROM {session} s JOIN {agent} b ON b.id = s.agent_id
    WHERE s.state IN ({active}) AND b.enabled{platforms.format("b")}
    GROUP BY s.agent_id
) held ON held.agent_id = a.id
WHERE a.enabled{platforms.format("a")}
ORDER BY has_leader DESC, load {"DESC" if strategy == "pack" else "ASC"}, a.agent_id ASC
"""


def candidates(platforms: tuple[str, ...] | None = None) -> list[Agent]:
    """The enabled agents of ``platforms`` (None: every platform) in placement order: a
    connected leader first, then by load (sessions in an active state; ascending to spread,
    descending to pack: ``STREAMSPACE_PLACEMENT``), then by name, each with the CPU and
    memory its sessions hold. One statement written by hand (subqueries and an ordering):
    every launch runs it."""
    platforms = platforms or ()
    params = [CommandState.PENDING, *RESOURCE_STATES, *RESOURCE_STATES, *ACTIVE_STATES, *platforms, *platforms]
    return list(Agent.objects.raw(_candidates_sql(len(platforms), settings.STREAMSPACE_PLACEMENT), params))


# One statement per set of platforms, compiled once per process (``streamspace.api.prepared``).
_agent_locks = PreparedValues(
    lambda platforms: (
        Agent.objects.select_for_update().filter(enabled=True, platform__in=platforms).order_by("pk").values("pk")
    )
)


def lock_agents(template: Any) -> None:
    """Lock the rows of every agent that could run ``template`` (in primary-key order, so
    launches never deadlock), for the rest of the caller's transaction.

    Launches that may land on the same agents then place one after another, each counting
    the sessions the previous ones created, so concurrent launches never take an agent past
    its reported limits. (SQLite has one writer at a time: the lock is a no-op there.)
    """
    _agent_locks.rows(platforms_of(template.platform))


def select_agent(template: Any, *, cpu: int | None = None, memory: int | None = None) -> Agent:
    """Pick the agent for a new session of ``template`` asking ``cpu`` millicores and
    ``memory`` MB (default: the template's): the first candidate, in placement order, that
    can serve it now (:func:`sessions_app.availability.refusal`).

    Raises the refusal's error when none can: :class:`NoAgent` or :class:`NoCapacity` (503),
    :class:`ImageMissing` or :class:`FeatureMissing` (409), with the reason the catalog
    shows. The agent comes back with what :func:`direct_route` needs (``leader_instance_id``,
    ``leader_channel``, ``has_pending``), read in the same query. Under
    :func:`lock_agents` the choice holds until the caller's transaction ends.
    """
    agent, availability = decide(template, candidates(platforms_of(template.platform)), cpu=cpu, memory=memory)
    if agent is None:
        raise availability.error()
    return agent


class CatalogAvailability:
    """Availability of many templates for one request: the agents are read once (one
    query, on first use) and every template is judged against them in memory."""

    def __init__(self) -> None:
        self._agents: list[Agent] | None = None

    def of(self, template: Any) -> Availability:
        if self._agents is None:
            self._agents = candidates()
        platforms = platforms_of(template.platform)
        return decide(template, (agent for agent in self._agents if agent.platform in platforms))[1]


def direct_route(agent: Agent) -> Route | None:
    """Where a new command for ``agent`` can go at once, as :func:`select_agent` found it.

    Only when the agent has a connected leader and no older command waits in ``pending``
    (commands go out in creation order); otherwise ``None``, and the command is claimed on
    commit like any other.
    """
    instance_id, channel = getattr(agent, "leader_instance_id", None), getattr(agent, "leader_channel", None)
    if not instance_id or not channel or getattr(agent, "has_pending", True):
        return None
    return instance_id, channel

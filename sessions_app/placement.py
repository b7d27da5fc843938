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

from agents_app.models import Agent, AgentCommand, AgentInstance, CommandState
from agents_app.services import Route
from sessions_app.availability import (
    AgentFull,
    Availability,
    FeatureMissing,
    ImageMissing,
    NoAgent,
    decide,
    platforms_of,
)
from sessions_app.models import ACTIVE_STATES, Session

__all__ = [
    "AgentFull",
    "CatalogAvailability",
    "FeatureMissing",
    "ImageMissing",
    "NoAgent",
    "candidates",
    "direct_route",
    "select_agent",
]


@functools.cache
def _candidates_sql(platform_count: int) -> str:
    """Every enabled agent of the platforms (any platform when ``platform_count`` is 0), in
    placement order, with what the rule and :func:`direct_route` need."""
    agent, instance = Agent._meta.db_table, AgentInstance._meta.db_table
    command, session = AgentCommand._meta.db_table, Session._meta.db_table
    connected = f"FROM {instance} i WHERE i.agent_id = a.id AND i.connected"
    leader = f"{connected} AND i.is_leader"
    newest = f"{leader} AND i.channel_name <> '' ORDER BY i.connected_at DESC LIMIT 1"
    active = ", ".join(["%s"] * len(ACTIVE_STATES))
    where = "a.enabled"
    if platform_count:
        where += f" AND a.platform IN ({', '.join(['%s'] * platform_count)})"
    return f"""
SELECT a.*,
    EXISTS (SELECT 1 {leader}) AS has_leader,
    EXISTS (SELECT 1 {connected}) AS has_replica,
    (SELECT COUNT(*) FROM {session} s WHERE s.agent_id = a.id AND s.state IN ({active})) AS load,
    (SELECT i.capacity {connected} ORDER BY i.is_leader DESC, i.connected_at DESC LIMIT 1) AS leader_capacity,
    (SELECT i.instance_id {newest}) AS leader_instance_id,
    (SELECT i.channel_name {newest}) AS leader_channel,
    EXISTS (SELECT 1 FROM {command} c WHERE c.agent_id = a.id AND c.state = %s) AS has_pending
FROM {agent} a
WHERE {where}
ORDER BY has_leader DESC, load ASC, a.agent_id ASC
"""


def candidates(platforms: tuple[str, ...] | None = None) -> list[Agent]:
    """The enabled agents of ``platforms`` (None: every platform) in placement order: a
    connected leader first, then the least loaded (sessions in an active state), then by
    name. One statement written by hand (subqueries and an ordering): every launch runs it."""
    platforms = platforms or ()
    params = [*ACTIVE_STATES, CommandState.PENDING, *platforms]
    return list(Agent.objects.raw(_candidates_sql(len(platforms)), params))


def select_agent(template: Any) -> Agent:
    """Pick the agent for a new session of ``template``: the first candidate, in placement
    order, that can serve it now (:func:`sessions_app.availability.refusal`).

    Raises the refusal's error when none can: :class:`NoAgent` or :class:`AgentFull` (503),
    :class:`ImageMissing` or :class:`FeatureMissing` (409), with the reason the catalog
    shows. The agent comes back with what :func:`direct_route` needs (``leader_instance_id``,
    ``leader_channel``, ``has_pending``), read in the same query.
    """
    agent, availability = decide(template, candidates(platforms_of(template.platform)))
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

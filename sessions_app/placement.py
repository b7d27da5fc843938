"""Placement: which agent runs a new session.

Placement belongs to the session app because it weighs sessions (an agent's load is its
sessions in an active state); the agent app only stores agents, instances and commands.
"""

from __future__ import annotations

import functools

from agents_app.models import Agent, AgentCommand, AgentInstance, CommandState, Platform
from agents_app.services import Route
from sessions_app.models import ACTIVE_STATES, Session
from streamspace.api.errors import Unavailable


class NoAgent(Unavailable):
    code = "no_agent"


@functools.cache
def _select_sql(platform_count: int) -> str:
    agent, instance = Agent._meta.db_table, AgentInstance._meta.db_table
    command, session = AgentCommand._meta.db_table, Session._meta.db_table
    leader = f"FROM {instance} i WHERE i.agent_id = a.id AND i.connected AND i.is_leader"
    newest = f"{leader} AND i.channel_name <> '' ORDER BY i.connected_at DESC LIMIT 1"
    active = ", ".join(["%s"] * len(ACTIVE_STATES))
    platforms = ", ".join(["%s"] * platform_count)
    return f"""
SELECT a.*,
    EXISTS (SELECT 1 {leader}) AS has_leader,
    (SELECT COUNT(*) FROM {session} s WHERE s.agent_id = a.id AND s.state IN ({active})) AS load,
    (SELECT i.instance_id {newest}) AS leader_instance_id,
    (SELECT i.channel_name {newest}) AS leader_channel,
    EXISTS (SELECT 1 FROM {command} c WHERE c.agent_id = a.id AND c.state = %s) AS has_pending
FROM {agent} a
WHERE a.enabled AND a.platform IN ({platforms})
ORDER BY has_leader DESC, load ASC, a.agent_id ASC
LIMIT 1
"""


def select_agent(platform: str) -> Agent:
    """Pick the agent for a new session: a connected leader first, then the least loaded
    (sessions in an active state), then by name.

    Raises :class:`NoAgent` (503) when no agent could ever serve the platform ('' = any image
    platform: docker or kubernetes). An agent without a connected leader is still chosen
    when it is the only candidate: its commands wait in ``pending`` and go out when a leader
    registers. The agent comes back with what :func:`direct_route` needs
    (``leader_instance_id``, ``leader_channel``, ``has_pending``), read in the same query.

    Every launch runs this, so it is one statement written by hand (three subqueries and an
    ordering) instead of a queryset rebuilt on every call.
    """
    platforms = [platform] if platform else [Platform.DOCKER, Platform.KUBERNETES]
    params = [*ACTIVE_STATES, CommandState.PENDING, *platforms]
    agent = next(iter(Agent.objects.raw(_select_sql(len(platforms)), params)), None)
    if agent is None:
        wanted = platform or "docker or kubernetes"
        raise NoAgent(f"No agent is registered for {wanted}; ask an operator to add one.")
    return agent


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

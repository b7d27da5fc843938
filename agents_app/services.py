"""Agent registry, selection and durable command dispatch (ARCHITECTURE §4)."""

from __future__ import annotations

import functools
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents_app.models import Agent, AgentCommand, AgentInstance, CommandState
from agents_app.tokens import hash_token, new_token
from sessions_app.models import ACTIVE_STATES, Platform, Session
from streamspace.api.errors import Conflict, Unavailable
from streamspace.audit.services import record


class NoAgent(Unavailable):
    code = "no_agent"


def create_agent(
    agent_id: str, platform: str, *, name: str = "", actor: Any = None, request: Any = None
) -> tuple[Agent, str]:
    """Register a logical agent and return it with its token (shown this once only)."""
    if Agent.objects.filter(agent_id=agent_id).exists():
        raise Conflict(f"An agent named {agent_id} exists already.", code="agent_exists")
    token = new_token()
    agent = Agent.objects.create(
        agent_id=agent_id,
        platform=platform,
        name=name or agent_id,
        token_hash=hash_token(token),
        token_prefix=token[:8],
    )
    record("agent.create", actor=actor, target=agent, request=request, details={"platform": platform})
    return agent, token


def agent_for_token(token: str) -> Agent | None:
    if not token:
        return None
    return Agent.objects.filter(token_hash=hash_token(token), enabled=True).first()


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

    Every launch runs this, so it is one hand-written statement: building the equivalent
    queryset (three subqueries and an aggregate) cost more CPU than PostgreSQL running it.
    """
    platforms = [platform] if platform else [Platform.DOCKER, Platform.KUBERNETES]
    params = [*ACTIVE_STATES, CommandState.PENDING, *platforms]
    agent = next(iter(Agent.objects.raw(_select_sql(len(platforms)), params)), None)
    if agent is None:
        wanted = platform or "docker or kubernetes"
        raise NoAgent(f"No agent is registered for {wanted}; ask an operator to add one.")
    return agent


Route = tuple[str, str]  # (instance_id, channel_name) of an agent's connected leader


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


def enqueue_command(session: Any, action: str, spec: dict[str, Any], *, route: Route | None = None) -> AgentCommand:
    """Create the durable command row for ``session`` and send it once the transaction commits.

    Must be called inside the transaction that changes the session's state, so the state
    change and the command are committed together or not at all. With ``route`` (from
    :func:`direct_route`) the row is written as ``sent`` to that leader and its frame goes
    out on commit without a claim; a leader that is no longer leader hands it back, and an
    unacked command is re-sent by the ack-timeout sweep, as for any sent command.
    """
    return enqueue_commands([(session, action, spec)], route=route)[0]


def enqueue_commands(items: list[tuple[Any, str, dict[str, Any]]], *, route: Route | None = None) -> list[AgentCommand]:
    """:func:`enqueue_command` for many ``(session, action, spec)`` at once: one INSERT for all
    the rows and, on commit, one send per agent (each send takes every pending command)."""
    claimed: dict[str, Any] = {}
    if route is not None:
        if len({session.agent_id for session, _, _ in items}) != 1:
            raise ValueError("a route belongs to one agent")
        claimed = {"state": CommandState.SENT, "attempts": 1, "sent_at": timezone.now(), "instance_id": route[0]}
    commands = AgentCommand.objects.bulk_create(
        [
            AgentCommand(agent_id=session.agent_id, session=session, action=action, spec=spec, **claimed)
            for session, action, spec in items
        ]
    )
    if route is not None:
        from agents_app import dispatch  # the channel-layer side, imported lazily

        transaction.on_commit(lambda: dispatch.send_frames(route[1], commands))
        return commands
    for agent_pk in dict.fromkeys(command.agent_id for command in commands):
        transaction.on_commit(lambda agent_pk=agent_pk: send_pending(agent_pk))
    return commands


def send_pending(agent_pk: int) -> int:
    """Send the agent's pending commands to its connected leader. Returns how many went out.

    Without a connected leader nothing is sent and the commands stay ``pending``.
    """
    from agents_app import dispatch  # the channel-layer side, imported lazily

    return dispatch.send_pending_commands(agent_pk)


def pending_count(agent: Agent) -> int:
    return agent.commands.filter(state__in=[CommandState.PENDING, CommandState.SENT]).count()


# --- sweeps (scheduled by the job runner / Celery beat) -------------------------------------


def requeue_unacked_commands(timeout_s: float) -> int:
    """Commands ``sent`` longer than ``timeout_s`` ago without an ack go back to ``pending``
    and are sent again to the current leader (agents de-duplicate by command id)."""
    from datetime import timedelta

    from django.utils import timezone

    cutoff = timezone.now() - timedelta(seconds=timeout_s)
    stale = AgentCommand.objects.filter(state=CommandState.SENT, sent_at__lt=cutoff)
    agent_pks = set(stale.values_list("agent_id", flat=True))
    count = stale.update(state=CommandState.PENDING)
    for agent_pk in agent_pks:
        send_pending(agent_pk)
    return count


def expire_old_commands(max_age_s: float) -> int:
    """Commands not finished after ``max_age_s`` become ``expired``; their sessions fail if
    they were waiting on them (a start nobody ever executed must not stay pending forever)."""
    from datetime import timedelta

    from django.utils import timezone

    from sessions_app.services import fail_session

    cutoff = timezone.now() - timedelta(seconds=max_age_s)
    old = AgentCommand.objects.filter(
        state__in=[CommandState.PENDING, CommandState.SENT, CommandState.ACKED], created_at__lt=cutoff
    ).select_related("session")
    expired = 0
    for command in old:
        if AgentCommand.objects.filter(pk=command.pk, state=command.state).update(
            state=CommandState.EXPIRED, completed_at=timezone.now(), error="expired"
        ):
            expired += 1
            if command.session is not None:
                fail_session(command.session, f"{command.action} was not completed by the agent in time.")
    return expired


def fail_stuck_sessions(max_age_s: float) -> int:
    """Sessions stuck in a transitional state (starting, stopping, ...) longer than
    ``max_age_s`` become ``failed`` so users see a reason instead of a spinner."""
    from datetime import timedelta

    from django.utils import timezone

    from sessions_app.models import Session, SessionState
    from sessions_app.services import fail_session

    transitional = [
        SessionState.PENDING,
        SessionState.STARTING,
        SessionState.HIBERNATING,
        SessionState.WAKING,
        SessionState.STOPPING,
    ]
    cutoff = timezone.now() - timedelta(seconds=max_age_s)
    stuck = Session.objects.filter(state__in=transitional, state_changed_at__lt=cutoff)
    return sum(
        fail_session(session, f"Stuck in {session.state} for more than {int(max_age_s)} s.") for session in stuck
    )


def sweep_stale_instances(heartbeat_interval_s: float) -> int:
    """Instances without a heartbeat for 3 intervals are marked offline (and dropped from the
    registry); a leader among them surfaces as ``agent.leader_changed``."""
    from datetime import timedelta

    from django.utils import timezone

    from agents_app.hub import presence as registry
    from streamspace import events

    cutoff = timezone.now() - timedelta(seconds=heartbeat_interval_s * registry.STALE_AFTER_INTERVALS)
    stale = list(AgentInstance.objects.filter(connected=True, last_heartbeat__lt=cutoff).select_related("agent"))
    for instance in stale:
        live = registry.connections(instance.agent.agent_id)
        if instance.instance_id in live:
            continue  # the database mirror is rate-limited; Redis says it is alive
        AgentInstance.objects.filter(pk=instance.pk).update(
            connected=False, is_leader=False, disconnected_at=timezone.now()
        )
        registry.forget_instance(instance.agent.agent_id, instance.instance_id)
        data = {"agent_id": instance.agent.agent_id, "instance_id": instance.instance_id, "reason": "stale"}
        events.emit("agent.disconnected", data=data)
        if instance.is_leader:
            events.emit("agent.leader_changed", data={**data, "is_leader": False})
    return len(stale)


def with_live_heartbeats(agents: list[Agent]) -> list[Agent]:
    """Overlay the registry's heartbeats on prefetched instances.

    The database mirror of heartbeats is rate-limited (``AGENT_HEARTBEAT_DB_WRITE_S``);
    Redis holds every one, so pages and the API show the true heartbeat age.
    """
    from datetime import UTC, datetime

    from agents_app.hub import presence as registry

    for agent in agents:
        live = registry.connections(agent.agent_id)
        for instance in agent.instances.all():
            beat = live.get(instance.instance_id, {}).get("last_heartbeat")
            if beat is not None and instance.connected:
                instance.last_heartbeat = datetime.fromtimestamp(beat, tz=UTC)
    return agents

"""Agent registry, selection and durable command dispatch (ARCHITECTURE §4)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q

from agents_app.models import Agent, AgentCommand, AgentInstance, CommandState
from agents_app.tokens import hash_token, new_token
from sessions_app.models import ACTIVE_STATES, Platform
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


def candidate_agents(platform: str):
    """Enabled agents able to run a template of ``platform`` ('' = any image platform)."""
    agents = Agent.objects.filter(enabled=True)
    if platform:
        return agents.filter(platform=platform)
    return agents.filter(platform__in=[Platform.DOCKER, Platform.KUBERNETES])


def select_agent(platform: str) -> Agent:
    """Pick the agent for a new session: a connected leader first, then the least loaded.

    Raises :class:`NoAgent` (503) when no agent could ever serve the platform. An agent
    without a connected leader is still chosen when it is the only candidate: its commands
    wait in ``pending`` and go out when a leader registers.
    """
    leader = AgentInstance.objects.filter(agent=OuterRef("pk"), connected=True, is_leader=True)
    agent = (
        candidate_agents(platform)
        .annotate(
            has_leader=Exists(leader),
            load=Count("sessions", filter=Q(sessions__state__in=ACTIVE_STATES)),
        )
        .order_by("-has_leader", "load", "agent_id")
        .first()
    )
    if agent is None:
        wanted = platform or "docker or kubernetes"
        raise NoAgent(f"No agent is registered for {wanted}; ask an operator to add one.")
    return agent


def enqueue_command(session: Any, action: str, spec: dict[str, Any]) -> AgentCommand:
    """Create the durable command row for ``session`` and send it once the transaction commits.

    Must be called inside the transaction that changes the session's state, so the state
    change and the command are committed together or not at all.
    """
    command = AgentCommand.objects.create(agent_id=session.agent_id, session=session, action=action, spec=spec)
    transaction.on_commit(lambda: send_pending(command.agent_id))
    return command


def send_pending(agent_pk: int) -> int:
    """Send the agent's pending commands to its connected leader. Returns how many went out.

    Without a connected leader nothing is sent and the commands stay ``pending``.
    """
    from agents_app import dispatch  # the channel-layer side, imported lazily

    return dispatch.send_pending_commands(agent_pk)


def pending_count(agent: Agent) -> int:
    return agent.commands.filter(state__in=[CommandState.PENDING, CommandState.SENT]).count()

"""Agents and their durable commands: creation, token lookup, enqueueing and sending.

Commands are rows first (:class:`agents_app.models.AgentCommand`), created in the caller's
transaction; their frames go out on commit (:mod:`agents_app.dispatch`). Which agent runs a
session is decided by the session app (``sessions_app/placement.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents_app import dispatch
from agents_app.hub import presence
from agents_app.models import Agent, AgentCommand, CommandState
from agents_app.tokens import hash_token, new_token
from streamspace.api.errors import Conflict
from streamspace.audit.services import record


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


def agents_for_tokens(tokens: list[str]) -> list[Agent | None]:
    """:func:`agent_for_token` for many tokens in one query (the hub's connection batches)."""
    hashes = [hash_token(token) if token else "" for token in tokens]
    found = {
        agent.token_hash: agent for agent in Agent.objects.filter(token_hash__in={h for h in hashes if h}, enabled=True)
    }
    return [found.get(h) if h else None for h in hashes]


Route = tuple[str, str]  # (instance_id, channel_name) of an agent's connected leader


def enqueue_command(session: Any, action: str, spec: dict[str, Any], *, route: Route | None = None) -> AgentCommand:
    """Create the durable command row for ``session`` and send it once the transaction commits.

    Must be called inside the transaction that changes the session's state, so the state
    change and the command are committed together or not at all. With ``route`` (from
    :func:`sessions_app.placement.direct_route`) the row is written as ``sent`` to that leader and its frame goes
    out on commit without a claim; a leader that is no longer leader hands it back, and an
    unacked command is re-sent by the ack-timeout sweep, as for any sent command.
    """
    return enqueue_commands([(session, action, spec)], route=route)[0]


def enqueue_commands(items: list[tuple[Any, str, dict[str, Any]]], *, route: Route | None = None) -> list[AgentCommand]:
    """:func:`enqueue_command` for many ``(session, action, spec)`` at once: one INSERT for all
    the rows and, on commit, one send per agent (each send takes every pending command)."""
    commands = AgentCommand.objects.bulk_create(new_commands(items, route=route))
    send_on_commit(commands, route=route)
    return commands


def new_commands(items: list[tuple[Any, str, dict[str, Any]]], *, route: Route | None = None) -> list[AgentCommand]:
    """The rows :func:`enqueue_commands` writes, built and not saved: for a caller that writes
    them together with rows of its own, in its transaction, and then calls
    :func:`send_on_commit` with them."""
    claimed: dict[str, Any] = {}
    if route is not None:
        if len({session.agent_id for session, _, _ in items}) != 1:
            raise ValueError("a route belongs to one agent")
        claimed = {"state": CommandState.SENT, "attempts": 1, "sent_at": timezone.now(), "instance_id": route[0]}
    return [
        AgentCommand(agent_id=session.agent_id, session=session, action=action, spec=spec, **claimed)
        for session, action, spec in items
    ]


def send_on_commit(commands: list[AgentCommand], *, route: Route | None = None) -> None:
    """Send the written ``commands`` once the transaction commits: to ``route``'s leader
    (they were built for it), else each agent's pending commands to its leader."""
    if route is not None:
        transaction.on_commit(lambda: dispatch.send_frames(route[1], commands))
        return
    for agent_pk in dict.fromkeys(command.agent_id for command in commands):
        transaction.on_commit(lambda agent_pk=agent_pk: send_pending(agent_pk))


def send_pending(agent_pk: int) -> int:
    """Send the agent's pending commands to its connected leader. Returns how many went out.

    Without a connected leader nothing is sent and the commands stay ``pending``.
    """
    return dispatch.send_pending_commands(agent_pk)


def with_live_heartbeats(agents: list[Agent]) -> list[Agent]:
    """Overlay presence's heartbeats on prefetched instances.

    The database mirror of heartbeats is rate-limited (``AGENT_HEARTBEAT_DB_WRITE_S``);
    Redis holds every one, so pages and the API show the true heartbeat age.
    """
    for agent in agents:
        live = presence.connections(agent.agent_id)
        for instance in agent.instances.all():
            beat = live.get(instance.instance_id, {}).get("last_heartbeat")
            if beat is not None and instance.connected:
                instance.last_heartbeat = datetime.fromtimestamp(beat, tz=UTC)
    return agents

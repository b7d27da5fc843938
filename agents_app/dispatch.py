"""Sending command frames to the leader's socket, on whichever replica holds it.

The command row is the truth; the channel-layer message is only a nudge to the consumer
holding the leader's socket. A command is claimed with a compare-and-set from ``pending``
to ``sent`` so two replicas never both send it; an unacked ``sent`` command is returned to
``pending`` by the command sweep (or on the leader's reconnect) and sent again.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from agents_app.models import AgentCommand, AgentInstance, CommandState
from streamspace.api.prepared import Placeholder, PreparedInstances

log = logging.getLogger(__name__)

COMMAND_MESSAGE_TYPE = "agent.command"


# Every command sent without a route asks for the leader: compiled once per process
# (``streamspace.api.prepared``).
_leader = PreparedInstances(
    AgentInstance,
    lambda shape, *, agent_pk: (
        AgentInstance.objects.filter(agent_id=agent_pk, connected=True, is_leader=True)
        .exclude(channel_name="")
        .order_by("-connected_at")[:1]
    ),
    agent_pk=Placeholder(AgentInstance._meta.get_field("agent").target_field, -2_000_000_039),
)


def leader_instance(agent_pk: int) -> AgentInstance | None:
    """The agent's connected leader with a channel (the newest, if several claim it), or None."""
    found = _leader.instances(None, agent_pk=agent_pk)
    return found[0] if found else None


def command_frame_payload(command: AgentCommand) -> dict[str, Any]:
    return {
        "command_id": str(command.id),
        "action": command.action,
        "session_id": str(command.session_id) if command.session_id else "",
        "spec": command.spec,
        "attempt": command.attempts,
    }


def send_pending_commands(agent_pk: int) -> int:
    """Claim and send every pending command of the agent to its connected leader.

    The commands are claimed together (one locked read, one UPDATE) and their frames go out
    in one trip to the channel layer; a frame the layer refuses puts its command back to
    ``pending``. Returns how many went out.
    """
    leader = leader_instance(agent_pk)
    if leader is None:
        return 0
    commands = _claim_pending(agent_pk, leader.instance_id)
    if not commands:
        return 0
    return send_frames(leader.channel_name, commands)


def send_frames(channel_name: str, commands: list[AgentCommand]) -> int:
    """Send claimed (``sent``) commands to a leader's channel in one trip; a frame the layer
    refuses puts its command back to ``pending``. Returns how many went out."""
    failed = async_to_sync(_send_frames)(channel_name, commands)
    if failed:
        AgentCommand.objects.filter(pk__in=failed, state=CommandState.SENT).update(state=CommandState.PENDING)
    return len(commands) - len(failed)


SUPERSEDED = "superseded: a later command for this session went out first"


def expire_superseded(agent_pk: int) -> int:
    """Expire the agent's pending commands that a later command of the same session has
    overtaken (it was sent, acked or finished while this one waited, e.g. returned to
    ``pending`` after its leader went away). Sent now, such a command would undo what the
    session's later request did: a ``wake_session`` run after the ``stop_session`` that
    followed it leaves a workload running for a stopped session. Expired this way, no
    ``command_expired`` signal fires: the session follows the later command."""
    overtaken = AgentCommand.objects.filter(
        session_id=OuterRef("session_id"), created_at__gt=OuterRef("created_at")
    ).exclude(state=CommandState.PENDING)
    return (
        AgentCommand.objects.filter(agent_id=agent_pk, state=CommandState.PENDING, session__isnull=False)
        .filter(Exists(overtaken))
        .update(state=CommandState.EXPIRED, completed_at=timezone.now(), error=SUPERSEDED)
    )


def _claim_pending(agent_pk: int, instance_id: str) -> list[AgentCommand]:
    """Move the agent's pending commands to ``sent`` for this caller, oldest first (those a
    later command of their session overtook are expired instead: :func:`expire_superseded`).

    Rows another replica is claiming at the same moment are skipped (``SKIP LOCKED``), so a
    command is never sent twice by two claimers. On PostgreSQL that is one statement
    (``UPDATE ... RETURNING``, no explicit transaction). Where row locks do not exist
    (SQLite) the UPDATE's compare-and-set decides, and the claim time tells which rows this
    caller won.
    """
    expire_superseded(agent_pk)
    if connection.vendor == "postgresql":
        return _claim_pending_pg(agent_pk, instance_id)
    with transaction.atomic():
        commands = list(
            AgentCommand.objects.select_for_update(skip_locked=True)
            .filter(agent_id=agent_pk, state=CommandState.PENDING)
            .order_by("created_at")
        )
        if not commands:
            return []
        now = timezone.now()
        ids = [command.pk for command in commands]
        claimed = AgentCommand.objects.filter(pk__in=ids, state=CommandState.PENDING).update(
            state=CommandState.SENT, attempts=F("attempts") + 1, sent_at=now, instance_id=instance_id
        )
        if claimed != len(commands):
            mine = AgentCommand.objects.filter(pk__in=ids, sent_at=now, instance_id=instance_id)
            won = set(mine.values_list("pk", flat=True))
            commands = [command for command in commands if command.pk in won]
    for command in commands:  # what the UPDATE wrote (the rows were locked meanwhile)
        command.state = CommandState.SENT
        command.attempts += 1
        command.sent_at = now
        command.instance_id = instance_id
    return commands


_TABLE = AgentCommand._meta.db_table
_CLAIM_SQL = f"""
UPDATE {_TABLE} SET state = %s, attempts = attempts + 1, sent_at = %s, instance_id = %s
WHERE id IN (
    SELECT id FROM {_TABLE} WHERE agent_id = %s AND state = %s ORDER BY created_at FOR UPDATE SKIP LOCKED
)
RETURNING *
"""


def _claim_pending_pg(agent_pk: int, instance_id: str) -> list[AgentCommand]:
    rows = AgentCommand.objects.raw(
        _CLAIM_SQL, [CommandState.SENT, timezone.now(), instance_id, agent_pk, CommandState.PENDING]
    )
    return sorted(rows, key=lambda command: command.created_at)


async def _send_frames(channel_name: str, commands: list[AgentCommand]) -> list[Any]:
    """Send each command's frame to the leader's channel; the ids of those that failed."""
    layer = get_channel_layer()
    failed = []
    for command in commands:
        try:
            await layer.send(channel_name, {"type": COMMAND_MESSAGE_TYPE, "payload": command_frame_payload(command)})
        except Exception:  # the layer is at-most-once anyway: the sweep re-sends unacked commands
            log.exception("channel layer send failed for command %s", command.pk)
            failed.append(command.pk)
    return failed


TUNNEL_MESSAGE_TYPE = "agent.tunnel_open"


def request_tunnel(agent_pk: int, *, stream_id: str, session_id: str, port: int, url: str, service: str = "") -> bool:
    """Ask the agent's leader to open a tunnel to a session port (docs/architecture.md §10.4).

    Returns False when no leader is connected. The agent dials the session and connects its
    tunnel socket to ``url`` (the replica serving the browser); no bytes ride the layer.
    ``service`` (``files``): the agent answers on the tunnel itself instead (§23).
    """
    leader = leader_instance(agent_pk)
    if leader is None:
        return False
    async_to_sync(get_channel_layer().send)(
        leader.channel_name,
        {
            "type": TUNNEL_MESSAGE_TYPE,
            "payload": {"stream_id": stream_id, "session_id": session_id, "port": port, "url": url, "service": service},
        },
    )
    return True

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
from django.db.models import F
from django.utils import timezone

from agents_app.models import AgentCommand, AgentInstance, CommandState

log = logging.getLogger(__name__)

COMMAND_MESSAGE_TYPE = "agent.command"


def leader_instance(agent_pk: int) -> AgentInstance | None:
    return (
        AgentInstance.objects.filter(agent_id=agent_pk, connected=True, is_leader=True)
        .exclude(channel_name="")
        .order_by("-connected_at")
        .first()
    )


def command_frame_payload(command: AgentCommand) -> dict[str, Any]:
    return {
        "command_id": str(command.id),
        "action": command.action,
        "session_id": str(command.session_id) if command.session_id else "",
        "spec": command.spec,
        "attempt": command.attempts,
    }


def send_pending_commands(agent_pk: int) -> int:
    """Claim and send every pending command of the agent to its connected leader."""
    leader = leader_instance(agent_pk)
    if leader is None:
        return 0
    layer = get_channel_layer()
    sent = 0
    pending = AgentCommand.objects.filter(agent_id=agent_pk, state=CommandState.PENDING).order_by("created_at")
    for command_id in pending.values_list("id", flat=True):
        claimed = AgentCommand.objects.filter(pk=command_id, state=CommandState.PENDING).update(
            state=CommandState.SENT,
            attempts=F("attempts") + 1,
            sent_at=timezone.now(),
            instance_id=leader.instance_id,
        )
        if not claimed:
            continue
        command = AgentCommand.objects.get(pk=command_id)
        try:
            async_to_sync(layer.send)(
                leader.channel_name, {"type": COMMAND_MESSAGE_TYPE, "payload": command_frame_payload(command)}
            )
        except Exception:  # the layer is at-most-once anyway: the sweep re-sends unacked commands
            log.exception("channel layer send failed for command %s", command_id)
            AgentCommand.objects.filter(pk=command_id, state=CommandState.SENT).update(state=CommandState.PENDING)
            continue
        sent += 1
    return sent


TUNNEL_MESSAGE_TYPE = "agent.tunnel_open"


def request_tunnel(agent_pk: int, *, stream_id: str, session_id: str, port: int, url: str) -> bool:
    """Ask the agent's leader to open a tunnel to a session port (ARCHITECTURE §6).

    Returns False when no leader is connected. The agent dials the session and connects its
    tunnel socket to ``url`` (the replica serving the browser); no bytes ride the layer.
    """
    leader = leader_instance(agent_pk)
    if leader is None:
        return False
    async_to_sync(get_channel_layer().send)(
        leader.channel_name,
        {
            "type": TUNNEL_MESSAGE_TYPE,
            "payload": {"stream_id": stream_id, "session_id": session_id, "port": port, "url": url},
        },
    )
    return True

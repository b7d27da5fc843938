"""Periodic sweeps of commands and instances (scheduled by the job runner or Celery beat).

Each is idempotent: updates are compare-and-set on the row's state, so two workers running
the same sweep, or beat firing twice, do no harm. Sessions are swept by
``sessions_app/sweeps.py``; an expired command is reported on
:data:`agents_app.signals.command_expired` for the session app to act on.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from agents_app import signals
from agents_app.hub import presence
from agents_app.models import AgentCommand, AgentInstance, CommandState
from agents_app.services import send_pending
from streamspace import events


def requeue_unacked_commands(timeout_s: float) -> int:
    """Commands ``sent`` longer than ``timeout_s`` ago without an ack go back to ``pending``
    and are sent again to the current leader (agents de-duplicate by command id). Commands
    still ``pending`` after ``timeout_s`` are sent again too: a send the channel layer refused
    (Redis down or failing over) left them there, and nothing else may ask for them."""
    cutoff = timezone.now() - timedelta(seconds=timeout_s)
    stale = AgentCommand.objects.filter(state=CommandState.SENT, sent_at__lt=cutoff)
    agent_pks = set(stale.values_list("agent_id", flat=True))
    count = stale.update(state=CommandState.PENDING)
    waiting = AgentCommand.objects.filter(state=CommandState.PENDING, created_at__lt=cutoff)
    agent_pks |= set(waiting.values_list("agent_id", flat=True))
    for agent_pk in agent_pks:
        send_pending(agent_pk)
    return count


def expire_old_commands(max_age_s: float) -> int:
    """Commands not finished after ``max_age_s`` become ``expired`` and are reported, so a
    start nobody ever executed does not leave its session pending forever."""
    cutoff = timezone.now() - timedelta(seconds=max_age_s)
    old = AgentCommand.objects.filter(
        state__in=[CommandState.PENDING, CommandState.SENT, CommandState.ACKED], created_at__lt=cutoff
    )
    expired = 0
    for command in old:
        if AgentCommand.objects.filter(pk=command.pk, state=command.state).update(
            state=CommandState.EXPIRED, completed_at=timezone.now(), error="expired"
        ):
            expired += 1
            signals.command_expired.send(sender=AgentCommand, command=command)
    return expired


def sweep_stale_instances(heartbeat_interval_s: float) -> int:
    """Instances without a heartbeat for three intervals are marked offline (and dropped from
    presence); a leader among them surfaces as ``agent.leader_changed``."""
    cutoff = timezone.now() - timedelta(seconds=heartbeat_interval_s * presence.STALE_AFTER_INTERVALS)
    stale = list(AgentInstance.objects.filter(connected=True, last_heartbeat__lt=cutoff).select_related("agent"))
    for instance in stale:
        live = presence.connections(instance.agent.agent_id)
        if instance.instance_id in live:
            continue  # the database mirror is rate-limited; Redis says it is alive
        AgentInstance.objects.filter(pk=instance.pk).update(
            connected=False, is_leader=False, disconnected_at=timezone.now()
        )
        presence.forget_instance(instance.agent.agent_id, instance.instance_id)
        data = {"agent_id": instance.agent.agent_id, "instance_id": instance.instance_id, "reason": "stale"}
        events.emit("agent.disconnected", data=data)
        if instance.is_leader:
            events.emit("agent.leader_changed", data={**data, "is_leader": False})
    return len(stale)

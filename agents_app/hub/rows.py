"""Database side of the agent hub: what each protocol frame does to the rows.

The consumer (``consumers.py``) stays thin and calls these through
``database_sync_to_async``. Every function is safe to run more than once for the same frame
(agents re-send, replicas race).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from agent_runtime import protocol
from agents_app.models import Agent, AgentCommand, AgentInstance, CommandAction, CommandState
from sessions_app import services as sessions
from sessions_app.models import Session, SessionState
from streamspace.audit.services import record

log = logging.getLogger(__name__)

# Sessions that must exist on the leader; if its inventory lacks them they failed meanwhile.
_EXPECTED_ON_AGENT = (SessionState.RUNNING, SessionState.HIBERNATED)


def connect_instance(agent: Agent, hello: protocol.Register, *, pod: str, channel_name: str) -> AgentInstance:
    """Upsert the instance row on ``register``; a leader claim demotes its siblings."""
    now = timezone.now()
    with transaction.atomic():
        instance, _ = AgentInstance.objects.update_or_create(
            agent=agent,
            instance_id=hello.instance_id,
            defaults={
                "pod": pod,
                "channel_name": channel_name,
                "is_leader": hello.is_leader,
                "connected": True,
                "hostname": hello.hostname[:255],
                "version": hello.version[:64],
                "capacity": protocol.to_dict(hello.capacity),
                "active_sessions": len(hello.sessions),
                "connected_at": now,
                "last_heartbeat": now,
                "disconnected_at": None,
            },
        )
        if hello.is_leader:
            AgentInstance.objects.filter(agent=agent, is_leader=True).exclude(pk=instance.pk).update(is_leader=False)
        Agent.objects.filter(pk=agent.pk).update(last_seen=now)
    return instance


def register(agent: Agent, hello: protocol.Register, *, pod: str, channel_name: str) -> AgentInstance:
    """Everything a ``register`` does to the database, in one thread hop: the instance row,
    and for a leader the inventory reconciliation and the return of unacked commands."""
    took_over_at = timezone.now()
    instance = connect_instance(agent, hello, pod=pod, channel_name=channel_name)
    if hello.is_leader:
        reconcile_inventory(agent, hello.sessions)
        requeue_unacked(agent, sent_before=took_over_at)
    return instance


def after_register(agent: Agent, hello: protocol.Register) -> None:
    """Once ``registered`` went out: announce the connection and flush pending commands."""
    from agents_app import dispatch
    from streamspace import events

    events.emit(
        "agent.connected",
        data={"agent_id": agent.agent_id, "instance_id": hello.instance_id, "is_leader": hello.is_leader},
    )
    if hello.is_leader:
        dispatch.send_pending_commands(agent.pk)


def disconnect_instance(instance_pk: int, channel_name: str) -> None:
    """Mark the instance offline, unless it has reconnected on another socket meanwhile."""
    AgentInstance.objects.filter(pk=instance_pk, channel_name=channel_name).update(
        connected=False, is_leader=False, disconnected_at=timezone.now()
    )


def record_heartbeat(instance_pk: int, beat: protocol.Heartbeat) -> None:
    """The rate-limited database mirror of a heartbeat (Redis gets every one)."""
    now = timezone.now()
    AgentInstance.objects.filter(pk=instance_pk).update(
        last_heartbeat=now, active_sessions=beat.active_sessions, capacity=protocol.to_dict(beat.capacity)
    )


def set_leader(agent: Agent, instance_pk: int, is_leader: bool) -> bool:
    """Apply a leadership change. Returns True if the instance's leadership changed."""
    with transaction.atomic():
        changed = AgentInstance.objects.filter(pk=instance_pk).exclude(is_leader=is_leader).update(is_leader=is_leader)
        if is_leader:
            AgentInstance.objects.filter(agent=agent, is_leader=True).exclude(pk=instance_pk).update(is_leader=False)
    return bool(changed)


def requeue_unacked(agent: Agent, *, sent_before: Any) -> int:
    """Return the agent's sent-but-unacked commands to ``pending`` (a leader (re)connects).

    Only commands sent before ``sent_before`` (the moment leadership was taken): one sent to
    the new leader after that is already where it belongs.
    """
    return AgentCommand.objects.filter(agent=agent, state=CommandState.SENT, sent_at__lt=sent_before).update(
        state=CommandState.PENDING
    )


def acknowledge(agent: Agent, command_id: str) -> bool:
    return bool(
        AgentCommand.objects.filter(
            pk=command_id, agent=agent, state__in=[CommandState.PENDING, CommandState.SENT]
        ).update(state=CommandState.ACKED, acked_at=timezone.now())
    )


NOT_LEADER = "not_leader"
_FAIL_SESSION_ON = {CommandAction.START, CommandAction.WAKE, CommandAction.HIBERNATE}


def complete(agent: Agent, result: protocol.Result) -> AgentCommand | None:
    """Record a command's result; a failed start/wake/hibernate fails the session."""
    # the few columns needed here; the session is read only when the result changes it
    command = (
        AgentCommand.objects.filter(pk=result.command_id, agent=agent)
        .only("id", "agent_id", "session_id", "action", "state", "acked_at")
        .first()
    )
    if command is None:
        return None
    if command.state in (CommandState.SUCCEEDED, CommandState.FAILED):
        return command  # a duplicate result (the agent re-sends for duplicate commands)
    if not result.ok and (result.error or "").startswith(NOT_LEADER):
        # The instance lost its lease between ack and execution: the command is not failed,
        # it belongs to whoever leads now.
        from agents_app import dispatch

        AgentCommand.objects.filter(pk=command.pk).update(state=CommandState.PENDING, acked_at=None)
        dispatch.send_pending_commands(agent.pk)
        return command
    now = timezone.now()
    command.state = CommandState.SUCCEEDED if result.ok else CommandState.FAILED
    command.error = (result.error or "")[:4000]
    command.result = result.data or {}
    command.completed_at = now
    command.acked_at = command.acked_at or now
    command.save(update_fields=["state", "error", "result", "completed_at", "acked_at"])
    session_id = command.session_id
    if session_id is not None:
        if not result.ok and command.action in _FAIL_SESSION_ON:
            sessions.fail_session(session_id, f"{command.action} failed: {result.error or 'unknown error'}")
        elif not result.ok and command.action == CommandAction.STOP:
            sessions.fail_session(session_id, f"stop failed: {result.error or 'unknown error'}")
        elif result.ok and command.action == CommandAction.STOP:
            sessions.apply_agent_status(session_id, SessionState.STOPPED)
    return command


class UnknownSession(LookupError):
    pass


def apply_status(agent: Agent, status: protocol.SessionStatus) -> bool:
    """Apply a ``session_status`` frame for one of this agent's sessions."""
    session_id = session_uuid(status.session_id)
    if session_id is None:
        raise UnknownSession(status.session_id)
    try:
        return sessions.apply_agent_status(
            session_id,
            status.state,
            streaming_ready=status.streaming_ready,
            streaming_port=status.streaming_port,
            endpoint=status.endpoint,
            message=status.message,
            agent=agent,
        )
    except Session.DoesNotExist:
        raise UnknownSession(status.session_id) from None


def session_uuid(value: str) -> Any:
    """The UUID a session id names, or None if it is not one."""
    import uuid

    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def reconcile_inventory(agent: Agent, items: list[protocol.InventoryItem]) -> dict[str, list[str]]:
    """Reconcile the leader's inventory with the database (ARCHITECTURE §4).

    - a session the database expects on the agent (running/hibernated) that the agent lacks
      becomes ``failed``;
    - an item whose state differs is applied like a ``session_status``;
    - workloads the database does not know (or knows as stopped) are reported in the audit
      log and never deleted.
    """
    reported = {item.session_id: item for item in items}
    known = {
        str(s.pk): s
        for s in Session.objects.filter(agent=agent)
        .exclude(state=SessionState.STOPPED)
        .filter(pk__in=[u for u in map(session_uuid, reported) if u is not None])
    }
    failed, updated = [], []
    for session in Session.objects.filter(agent=agent, state__in=_EXPECTED_ON_AGENT):
        lost = str(session.pk) not in reported
        if lost and sessions.fail_session(session, "The agent no longer has this session (lost while disconnected)."):
            failed.append(str(session.pk))
    for session_id, item in reported.items():
        session = known.get(session_id)
        if session is None:
            continue
        if sessions.apply_agent_status(
            session,
            item.state,
            streaming_ready=item.streaming_ready,
            streaming_port=item.streaming_port,
            endpoint=item.endpoint,
        ):
            updated.append(session_id)
    unknown = sorted(set(reported) - set(known))
    if unknown:
        record(
            "agent.unknown_sessions",
            actor_repr=f"agent:{agent.agent_id}",
            target=agent,
            details={"session_ids": unknown[:200], "count": len(unknown)},
        )
        log.warning("agent %s reports %d sessions the control plane does not know", agent.agent_id, len(unknown))
    return {"failed": failed, "updated": updated, "unknown": unknown}

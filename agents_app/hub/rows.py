"""What each protocol frame does to the agent hub's rows (instances and commands).

The consumer (:mod:`agents_app.hub.consumer`) stays thin and calls these through
``database_sync_to_async``. Every function is safe to run more than once for the same frame
(agents re-send, replicas race). What a frame says about a session is handed to the session
app through :mod:`agents_app.signals`, in the same thread and transaction.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agent_runtime import protocol
from agents_app import dispatch, endpoints, signals
from agents_app.metrics import COMMAND_SECONDS
from agents_app.models import Agent, AgentCommand, AgentInstance, CommandState
from streamspace import events, fanout
from streamspace.audit.services import record

log = logging.getLogger(__name__)


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
    and for a leader the inventory reconciliation, the return of unacked commands and of the
    commands it acked whose result never arrived (:func:`_ask_again_for_results`)."""
    took_over_at = timezone.now()
    instance = connect_instance(agent, hello, pod=pod, channel_name=channel_name)
    if hello.is_leader:
        # Reported endpoints are checked before anything stores them (agents_app/endpoints.py).
        items = _vetted_inventory(agent, hello.sessions)
        signals.inventory_reported.send(sender=Agent, agent=agent, items=items)
        requeue_unacked(agent, sent_before=took_over_at)
        _ask_again_for_results(Q(agent_id=agent.pk, instance_id=hello.instance_id), took_over_at)
    return instance


@dataclass(frozen=True, slots=True)
class Registration:
    """One ``register`` frame of a batch (:func:`register_many`)."""

    agent: Agent
    hello: protocol.Register
    pod: str
    channel_name: str


def register_many(batch: list[Registration]) -> list[tuple[AgentInstance, fanout.Batch] | BaseException]:
    """:func:`register` for many sockets in one thread hop, with the writes they share done
    once: the instance rows in one upsert, the siblings of new leaders demoted, the agents'
    ``last_seen``, their unacked commands and the commands the new leaders acked without a
    result (:func:`_ask_again_for_results`) returned to ``pending`` each in one statement.
    What is particular to one agent (its inventory's reconciliation) runs per registration,
    its announcements collected apart (``fanout.run_deferred``) for that socket's fan-out.

    Returns one entry per registration, in order: ``(instance, announcements)`` or the
    exception that registration raised. A second registration of the same agent in the
    batch (a socket replacing another, or two instances of it claiming leadership) is
    applied after the others, one by one in arrival order, so the last claim wins as it
    would unbatched.
    """
    took_over_at = now = timezone.now()
    results: list[tuple[AgentInstance, fanout.Batch] | BaseException | None] = [None] * len(batch)
    first: dict[int, int] = {}
    again: list[int] = []
    for index, item in enumerate(batch):
        key = item.agent.pk
        if key in first:
            again.append(index)
        else:
            first[key] = index
    unique = sorted(first.values())
    try:
        instances = _upsert_instances([batch[i] for i in unique], now)
    except Exception as exc:  # the shared writes failed: every registration of it did
        log.exception("batched registration of %d instances failed", len(unique))
        return [exc] * len(batch)
    leaders = [batch[i].agent.pk for i in unique if batch[i].hello.is_leader]
    concerned = _with_expected_sessions(
        [batch[i].agent.pk for i in unique if batch[i].hello.is_leader and not batch[i].hello.sessions]
    )
    for index, instance in zip(unique, instances, strict=True):
        item = batch[index]
        if not item.hello.is_leader or (not item.hello.sessions and item.agent.pk not in concerned):
            results[index] = (instance, [])  # nothing to reconcile: no sessions either side
            continue
        try:
            _, announcements = fanout.run_deferred(_reconcile, item.agent, item.hello)
            results[index] = (instance, announcements)
        except Exception as exc:
            log.exception("registration of %s failed", item.agent.agent_id)
            results[index] = exc
    if leaders:
        AgentCommand.objects.filter(agent_id__in=leaders, state=CommandState.SENT, sent_at__lt=took_over_at).update(
            state=CommandState.PENDING
        )
        ask_again = Q()
        for index in unique:
            if batch[index].hello.is_leader:
                ask_again |= Q(agent_id=batch[index].agent.pk, instance_id=batch[index].hello.instance_id)
        _ask_again_for_results(ask_again, took_over_at)
    for index in again:
        item = batch[index]
        try:
            results[index] = fanout.run_deferred(
                register, item.agent, item.hello, pod=item.pod, channel_name=item.channel_name
            )
        except Exception as exc:
            results[index] = exc
    return results  # type: ignore[return-value]  every entry is set


def _upsert_instances(batch: list[Registration], now: Any) -> list[AgentInstance]:
    """The instance rows of distinct (agent, instance) registrations, in one transaction."""
    rows = [
        AgentInstance(
            agent=item.agent,
            instance_id=item.hello.instance_id,
            pod=item.pod,
            channel_name=item.channel_name,
            is_leader=item.hello.is_leader,
            connected=True,
            hostname=item.hello.hostname[:255],
            version=item.hello.version[:64],
            capacity=protocol.to_dict(item.hello.capacity),
            active_sessions=len(item.hello.sessions),
            connected_at=now,
            last_heartbeat=now,
            disconnected_at=None,
        )
        for item in batch
    ]
    fields = [
        "pod",
        "channel_name",
        "is_leader",
        "connected",
        "hostname",
        "version",
        "capacity",
        "active_sessions",
        "connected_at",
        "last_heartbeat",
        "disconnected_at",
    ]
    with transaction.atomic():
        AgentInstance.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["agent", "instance_id"], update_fields=fields
        )
        by_key = {
            (row.agent_id, row.instance_id): row
            for row in AgentInstance.objects.filter(
                agent_id__in={item.agent.pk for item in batch},
                instance_id__in={item.hello.instance_id for item in batch},
            )
        }
        instances = [by_key[(item.agent.pk, item.hello.instance_id)] for item in batch]
        leaders = [instance for instance, item in zip(instances, batch, strict=True) if item.hello.is_leader]
        if leaders:
            # A leader's siblings are followers (a later `leader` frame of theirs says otherwise).
            AgentInstance.objects.filter(agent_id__in=[i.agent_id for i in leaders], is_leader=True).exclude(
                pk__in=[i.pk for i in leaders]
            ).update(is_leader=False)
        Agent.objects.filter(pk__in={item.agent.pk for item in batch}).update(last_seen=now)
    return instances


def _with_expected_sessions(agent_pks: list[int]) -> set[int]:
    """Those of ``agent_pks`` whose sessions an empty inventory concerns (one query)."""
    if not agent_pks:
        return set()
    found: set[int] = set()
    for _, pks in signals.sessions_expected.send(sender=Agent, agent_pks=agent_pks):
        found |= pks
    return found


def _reconcile(agent: Agent, hello: protocol.Register) -> None:
    # Reported endpoints are checked before anything stores them (agents_app/endpoints.py).
    items = _vetted_inventory(agent, hello.sessions)
    signals.inventory_reported.send(sender=Agent, agent=agent, items=items)


def after_register_many(batch: list[tuple[Agent, protocol.Register]]) -> list[BaseException | None]:
    """:func:`after_register` for many sockets in one thread hop: the leaders' pending commands
    are looked for in one query, and only agents that have some are sent theirs."""
    leaders = {agent.pk for agent, hello in batch if hello.is_leader}
    with_pending = (
        set(
            AgentCommand.objects.filter(agent_id__in=leaders, state=CommandState.PENDING)
            .values_list("agent_id", flat=True)
            .distinct()
        )
        if leaders
        else set()
    )
    with events.batch():  # the subscribers' lookups (plugin subscriptions) once for the batch
        return [_after_register_one(agent, hello, with_pending) for agent, hello in batch]


def _after_register_one(agent: Agent, hello: protocol.Register, with_pending: set[int]) -> BaseException | None:
    try:
        events.emit(
            "agent.connected",
            data={"agent_id": agent.agent_id, "instance_id": hello.instance_id, "is_leader": hello.is_leader},
        )
        if hello.is_leader and agent.pk in with_pending:
            dispatch.send_pending_commands(agent.pk)
    except Exception as exc:
        log.exception("after registering %s", agent.agent_id)
        return exc
    return None


def after_register(agent: Agent, hello: protocol.Register) -> None:
    """Once ``registered`` went out: announce the connection and flush pending commands."""
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


def record_heartbeats(beats: list[tuple[int, protocol.Heartbeat]]) -> list[None]:
    """:func:`record_heartbeat` for many instances in one thread hop and one transaction."""
    with transaction.atomic():
        for instance_pk, beat in beats:
            record_heartbeat(instance_pk, beat)
    return [None] * len(beats)


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


def _ask_again_for_results(instances: Q, registered_at: Any) -> int:
    """Commands ``acked`` by the leaders ``instances`` selects (agent and instance id) before
    they registered go back to ``pending``, so they are sent to them again.

    Such a command's ``result`` may have been lost with the socket it went out on (a replica
    killed between the ack and the result). The instance that acked it answers a second
    delivery from its memory of command ids: the stored result when it finished, another ack
    while it runs; it never runs it twice (docs/architecture.md §6.3, §9.3). Only the
    instance that acked a command is asked, and only as leader: another instance could run
    it while the one that acked it still does. A command that a later command of its session
    overtook meanwhile is expired as superseded when the pending ones are claimed, never
    sent again (:func:`agents_app.dispatch.expire_superseded`)."""
    if not instances:
        return 0
    return (
        AgentCommand.objects.filter(instances, state=CommandState.ACKED, acked_at__lt=registered_at)
        .exclude(instance_id="")
        .update(state=CommandState.PENDING)
    )


def acknowledge(agent: Agent, command_id: str) -> bool:
    """Mark the agent's command acked unless it already was (or has ended); whether it did."""
    return bool(acknowledge_many(agent, [command_id]))


def acknowledge_many(agent: Agent, command_ids: list[str]) -> int:
    """:func:`acknowledge` for several commands in one UPDATE. Returns how many it acked."""
    return AgentCommand.objects.filter(
        pk__in=command_ids, agent=agent, state__in=[CommandState.PENDING, CommandState.SENT]
    ).update(state=CommandState.ACKED, acked_at=timezone.now())


NOT_LEADER = "not_leader"


def complete(agent: Agent, result: protocol.Result) -> AgentCommand | None:
    """Record a command's result and report it on :data:`agents_app.signals.command_finished`.

    A result of an instance that lost its lease before executing (``not_leader``) does not
    finish the command: it goes back to ``pending`` for whoever leads now.
    """
    # the few columns needed here; the session is read only by receivers that change it
    command = (
        AgentCommand.objects.filter(pk=result.command_id, agent=agent)
        .only("id", "agent_id", "session_id", "action", "state", "acked_at", "created_at")
        .first()
    )
    if command is None:
        return None
    if command.state in (CommandState.SUCCEEDED, CommandState.FAILED):
        return command  # a duplicate result (the agent re-sends for duplicate commands)
    if not result.ok and (result.error or "").startswith(NOT_LEADER):
        AgentCommand.objects.filter(pk=command.pk).update(state=CommandState.PENDING, acked_at=None)
        # Once committed: a caller's transaction (the hub's bursts) must not hand the command out first.
        transaction.on_commit(lambda: dispatch.send_pending_commands(agent.pk))
        return command
    now = timezone.now()
    command.state = CommandState.SUCCEEDED if result.ok else CommandState.FAILED
    command.error = (result.error or "")[:4000]
    command.result = result.data or {}
    command.completed_at = now
    command.acked_at = command.acked_at or now
    command.save(update_fields=["state", "error", "result", "completed_at", "acked_at"])
    COMMAND_SECONDS.labels(command.action, "ok" if result.ok else "failed").observe(
        max((now - command.created_at).total_seconds(), 0.0)
    )
    if command.session_id is not None:
        signals.command_finished.send(sender=AgentCommand, command=command, ok=result.ok, error=result.error or "")
    return command


class EndpointRefused(Exception):
    """A ``session_status`` reported an endpoint its agent may not report; the rest of the
    status was applied, with the session's endpoint cleared (:mod:`agents_app.endpoints`)."""


def apply_status(agent: Agent, status: protocol.SessionStatus) -> None:
    """Report a ``session_status`` frame on :data:`agents_app.signals.session_reported`.

    Raises :class:`agents_app.signals.UnknownSession` when the id is not a session id, or when
    a receiver does not know the session on this agent; :class:`EndpointRefused` once the
    status was reported without an endpoint the agent may not report.
    """
    session_id = session_uuid(status.session_id)
    if session_id is None:
        raise signals.UnknownSession(status.session_id)
    # Reported endpoints are checked before anything stores them (agents_app/endpoints.py).
    reported = status.endpoint
    endpoint, refused = endpoints.vetted(agent.platform, str(session_id), reported)
    if refused:
        status = msgspec.structs.replace(status, endpoint=endpoint)
    signals.session_reported.send(sender=Agent, agent=agent, status=status)
    if refused:  # the session is this agent's: the receiver did not refuse the report
        raise EndpointRefused(_record_refused_endpoint(agent, str(session_id), reported, refused))


def _vetted_inventory(agent: Agent, items: list[protocol.InventoryItem]) -> list[protocol.InventoryItem]:
    """The inventory with every endpoint checked; refused ones are cleared and audited."""
    vetted = []
    for item in items:
        endpoint, refused = endpoints.vetted(agent.platform, item.session_id, item.endpoint)
        if refused:
            _record_refused_endpoint(agent, item.session_id, item.endpoint, refused)
            item = msgspec.structs.replace(item, endpoint=endpoint)
        vetted.append(item)
    return vetted


def _record_refused_endpoint(agent: Agent, session_id: str, endpoint: str | None, reason: str) -> str:
    """Audit a refused endpoint (``agent.endpoint_refused``); returns the message for the agent."""
    record(
        "agent.endpoint_refused",
        actor_repr=f"agent:{agent.agent_id}",
        target_type="session",
        target_id=session_id[:64],
        details={"agent_id": agent.agent_id, "endpoint": (endpoint or "")[:300], "reason": reason},
    )
    log.warning("agent %s reported endpoint %r for %s: refused (%s)", agent.agent_id, endpoint, session_id, reason)
    return f"endpoint {endpoint!r} refused: {reason}"


def session_uuid(value: str) -> uuid.UUID | None:
    """The UUID a session id names, or None if it is not one."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None

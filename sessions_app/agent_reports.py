"""What an agent's reports do to sessions: the receivers of :mod:`agents_app.signals`.

The agent hub stores commands and instances and sends every statement about a session here
(connected in ``SessionsAppConfig.ready()``); the session rules stay in this app:

- a finished command: a failed start, wake or hibernate fails the session (the user sees the
  agent's error); a failed stop fails it too; a successful stop makes it ``stopped``;
- an expired command fails the session while it still waits on it (a session that reached a
  state by the agent's other reports is left as it is);
- a ``session_status`` frame goes through :func:`sessions_app.services.apply_agent_status`,
  with its progress, exit status and output tail stored by :mod:`sessions_app.launch_reports`
  in the same transaction;
- a leader's inventory on ``register`` is reconciled (docs/architecture.md §6.4);
- a workload reported running for a session held as stopped, failed or hibernated is
  brought back to that state by a queued command (:mod:`sessions_app.stray_workloads`); the
  session is never moved back to running.

A session the control plane holds as ``running`` whose workload an agent reports stopped
(``hibernated``: a container that exited looks like a hibernated one) stopped on its own:
it fails, with the exit code the agent saw.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from agent_runtime import protocol
from agents_app.hub.rows import session_uuid
from agents_app.models import Agent, AgentCommand, CommandAction
from agents_app.signals import UnknownSession
from sessions_app import launch_reports, services, stray_workloads
from sessions_app.models import Session, SessionState
from streamspace.audit.services import record

log = logging.getLogger(__name__)

# Sessions that must exist on the leader; if its inventory lacks them they failed meanwhile.
_EXPECTED_ON_AGENT = (SessionState.RUNNING, SessionState.HIBERNATED)
_FAIL_SESSION_ON = {CommandAction.START, CommandAction.WAKE, CommandAction.HIBERNATE, CommandAction.STOP}


def on_command_finished(sender: Any, *, command: AgentCommand, ok: bool, error: str, **_: Any) -> None:
    if not ok and command.action in _FAIL_SESSION_ON:
        verb = "stop" if command.action == CommandAction.STOP else command.action
        services.fail_session(command.session_id, f"{verb} failed: {error or 'unknown error'}")
    elif ok and command.action == CommandAction.STOP:
        services.apply_agent_status(command.session_id, SessionState.STOPPED)


# The states a session waits in for each command's outcome.
_WAITING_ON = {
    CommandAction.START: (SessionState.PENDING, SessionState.STARTING),
    CommandAction.WAKE: (SessionState.WAKING,),
    CommandAction.HIBERNATE: (SessionState.HIBERNATING,),
    CommandAction.STOP: (SessionState.STOPPING,),
}


def on_command_expired(sender: Any, *, command: AgentCommand, **_: Any) -> None:
    """An expired command fails its session only while the session still waits on it. A
    session that reached a state by other reports (the agent's statuses, a leader's
    inventory: a start whose result was lost but whose session runs) is left as it is."""
    if command.session_id is not None:
        services.fail_session(
            command.session_id,
            f"{command.action} was not completed by the agent in time.",
            only_in=_WAITING_ON.get(command.action, ()),
        )


def on_session_reported(sender: Any, *, agent: Agent, status: protocol.SessionStatus, **_: Any) -> None:
    with transaction.atomic():
        # The whole row, read once: the state machine below uses it as it is.
        session = Session.objects.select_for_update().filter(pk=session_uuid(status.session_id), agent=agent).first()
        if session is None:
            raise UnknownSession(status.session_id)
        state, message = launch_reports.effective_state(session.state, status.state), status.message
        if state != status.state:
            message = message or launch_reports.stopped_on_its_own(status.exit_code)
        stored = launch_reports.record(
            session,
            failing=launch_reports.is_failure(session.state, state),
            exit_code=status.exit_code,
            log_tail=status.log_tail,
            progress=status.progress,
        )
        changed = services.apply_agent_status(
            session,
            state,
            streaming_ready=status.streaming_ready,
            streaming_port=status.streaming_port,
            endpoint=status.endpoint,
            message=message,
            agent=agent,
            locked=True,
        )
        if stored and not changed:
            launch_reports.refreshed(session)
        if not changed:
            stray_workloads.correct(session, status.state, agent=agent)


def on_inventory_reported(sender: Any, *, agent: Agent, items: list[protocol.InventoryItem], **_: Any) -> None:
    reconcile_inventory(agent, items)


def on_sessions_expected(sender: Any, *, agent_pks: list[int], **_: Any) -> set[int]:
    """The agents among ``agent_pks`` that :func:`reconcile_inventory` would find sessions
    of with an empty inventory (running or hibernated on them), in one query."""
    return set(
        Session.objects.filter(agent_id__in=agent_pks, state__in=_EXPECTED_ON_AGENT)
        .values_list("agent_id", flat=True)
        .distinct()
    )


def reconcile_inventory(agent: Agent, items: list[protocol.InventoryItem]) -> dict[str, list[str]]:
    """Reconcile a leader's inventory with the database.

    - a session the database expects on the agent (running/hibernated) that the agent lacks
      becomes ``failed``;
    - a ``stopping`` session the agent lacks is ``stopped``: its workload is gone, whether the
      stop's result was lost on the way (a replica died with it) or the stop never had to run;
    - an item whose state differs is applied like a ``session_status``;
    - a workload reported running for a session held as stopped, failed or hibernated gets
      the command that brings it to that state (:mod:`sessions_app.stray_workloads`);
    - other workloads the database does not know (or knows as stopped) are reported in the
      audit log and never deleted.
    """
    reported = {item.session_id: item for item in items}
    known = {
        str(s.pk): s
        for s in Session.objects.filter(agent=agent)
        .exclude(state=SessionState.STOPPED)
        .filter(pk__in=[u for u in map(session_uuid, reported) if u is not None])
    }
    corrected = _correct_stray(agent, reported)
    failed, updated, stopped = [], [], []
    for session in Session.objects.filter(agent=agent, state__in=_EXPECTED_ON_AGENT):
        lost = str(session.pk) not in reported
        if lost and services.fail_session(session, "The agent no longer has this session (lost while disconnected)."):
            failed.append(str(session.pk))
    for session in Session.objects.filter(agent=agent, state=SessionState.STOPPING):
        if str(session.pk) not in reported and services.apply_agent_status(session, SessionState.STOPPED):
            stopped.append(str(session.pk))
    for session_id, item in reported.items():
        session = known.get(session_id)
        if session is None:
            continue
        state = launch_reports.effective_state(session.state, item.state)
        message = launch_reports.stopped_on_its_own(item.exit_code) if state != item.state else None
        with transaction.atomic():
            launch_reports.record(
                session, failing=launch_reports.is_failure(session.state, state), exit_code=item.exit_code
            )
            changed = services.apply_agent_status(
                session,
                state,
                streaming_ready=item.streaming_ready,
                streaming_port=item.streaming_port,
                endpoint=item.endpoint,
                message=message,
            )
        if changed:
            updated.append(session_id)
    unknown = sorted(set(reported) - set(known) - set(corrected))
    if unknown:
        record(
            "agent.unknown_sessions",
            actor_repr=f"agent:{agent.agent_id}",
            target=agent,
            details={"session_ids": unknown[:200], "count": len(unknown)},
        )
        log.warning("agent %s reports %d sessions the control plane does not know", agent.agent_id, len(unknown))
    return {"failed": failed, "updated": updated, "stopped": stopped, "unknown": unknown, "corrected": corrected}


def _correct_stray(agent: Agent, reported: dict[str, protocol.InventoryItem]) -> list[str]:
    """Queue a stop or hibernation for each workload the inventory shows running while its
    session is held as stopped, failed or hibernated (:mod:`sessions_app.stray_workloads`)."""
    running = [u for sid, item in reported.items() if item.state == SessionState.RUNNING and (u := session_uuid(sid))]
    corrected = []
    candidates = Session.objects.filter(agent=agent, pk__in=running, state__in=list(stray_workloads.CORRECTIONS))
    for pk in candidates.values_list("pk", flat=True):
        with transaction.atomic():
            session = Session.objects.select_for_update().filter(pk=pk, agent=agent).first()
            if session is not None and stray_workloads.correct(session, SessionState.RUNNING, agent=agent):
                corrected.append(str(pk))
    return corrected

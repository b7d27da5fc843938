"""A workload running for a session whose recorded state says it must not run is corrected.

An agent leader that lost its mandate in the middle of a launch (paused by SIGSTOP or a stuck
call while another replica took over and stopped or hibernated the session) may still create
or start the session's workload: its last mandate check comes before its call reaches the
platform (docs/architecture.md §6.5). The new leader then sees that workload and reports it
``running`` (in a ``session_status`` or its inventory). The control plane never moves such a
session back to running (the user's last accepted request said otherwise); it queues the
command that brings the workload to what the session's state says, through the normal
durable command path, and audits it (``session.stray_workload``):

* ``stopped`` or ``failed``: ``stop_session`` (the home is kept);
* ``hibernated``: ``hibernate_session``.

One correction at a time: while any command of the session is unfinished (the correction
already queued, or a request of the user's) none is added; a later report queues it again if
the workload still runs. The session's state does not change: the stop's or hibernation's
result finds it already where the command leads.
"""

from __future__ import annotations

import logging
from typing import Any

from agents_app import services as agents
from agents_app.models import AgentCommand, CommandAction, CommandState
from sessions_app.models import Session, SessionState
from streamspace.audit.services import record

log = logging.getLogger(__name__)

S = SessionState

#: The command that brings a running workload to each state a session holds it must not run in.
CORRECTIONS: dict[str, str] = {
    S.STOPPED: CommandAction.STOP,
    S.FAILED: CommandAction.STOP,
    S.HIBERNATED: CommandAction.HIBERNATE,
}
_UNFINISHED = (CommandState.PENDING, CommandState.SENT, CommandState.ACKED)


def correct(session: Session, reported: str, *, agent: Any) -> AgentCommand | None:
    """Queue the command that stops (or hibernates) ``session``'s workload if ``agent`` reports
    it ``running`` while the session is held as stopped, failed or hibernated. Returns the
    queued command, or None when nothing is to be done (or a command of the session is
    still unfinished).

    Must run in the transaction holding ``session``'s row lock (``select_for_update``), with
    the row as read there: the command is committed with that view of its state or not at all.
    """
    action = CORRECTIONS.get(session.state)
    if reported != S.RUNNING or action is None:
        return None
    if AgentCommand.objects.filter(session=session, state__in=_UNFINISHED).exists():
        return None
    spec = {"delete_home": False} if action == CommandAction.STOP else {}
    command = agents.enqueue_command(session, action, spec)
    record(
        "session.stray_workload",
        actor_repr=f"agent:{agent.agent_id}",
        target=session,
        details={"state": session.state, "reported": reported, "command": action, "command_id": str(command.pk)},
    )
    log.warning(
        "agent %s reports session %s running while it is %s; %s queued",
        agent.agent_id,
        session.pk,
        session.state,
        action,
    )
    return command

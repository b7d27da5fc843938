"""What agents report about the sessions they run, for the app that owns sessions.

``agents_app`` sits below ``sessions_app`` (docs/architecture.md §2): it stores
commands and talks to agents but never imports the session model or its rules. Whatever an
agent says about a session is sent on one of these signals, and ``sessions_app`` connects
its receivers in ``AppConfig.ready()`` (``sessions_app/agent_reports.py``). Receivers run
synchronously, in the caller's thread and transaction, so a report is applied before the
hub answers the frame, and an exception a receiver raises reaches the caller (``send``, not
``send_robust``): :class:`UnknownSession` is how a receiver refuses a report.
"""

from __future__ import annotations

from django.dispatch import Signal


class UnknownSession(LookupError):
    """The reported session does not exist, or does not belong to the reporting agent."""


# A command for a session finished: kwargs ``command`` (AgentCommand, state set), ``ok``, ``error``.
command_finished = Signal()

# A command expired before the agent completed it: kwargs ``command`` (AgentCommand).
command_expired = Signal()

# A ``session_status`` frame: kwargs ``agent`` (Agent), ``status`` (protocol.SessionStatus).
session_reported = Signal()

# A leader's inventory on ``register``: kwargs ``agent`` (Agent), ``items`` (list[protocol.InventoryItem]).
inventory_reported = Signal()

# Which of several agents have sessions an empty inventory would concern (a leader's
# ``register`` with no sessions changes nothing for an agent without them): kwargs
# ``agent_pks`` (list[int]); a receiver returns the set of those pks. The hub batches
# registrations and skips ``inventory_reported`` for a leader reporting nothing whose agent
# is in no receiver's set.
sessions_expected = Signal()

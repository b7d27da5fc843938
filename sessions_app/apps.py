from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Sessions and catalog"

    def ready(self) -> None:
        # Imported here: receivers need the app registry, which is complete only now.
        from agents_app import signals  # noqa: PLC0415
        from agents_app.models import AgentQuerySet  # noqa: PLC0415
        from sessions_app import agent_reports  # noqa: PLC0415
        from sessions_app.models import ACTIVE_STATES  # noqa: PLC0415

        signals.command_finished.connect(agent_reports.on_command_finished, dispatch_uid="sessions-command-finished")
        signals.command_expired.connect(agent_reports.on_command_expired, dispatch_uid="sessions-command-expired")
        signals.session_reported.connect(agent_reports.on_session_reported, dispatch_uid="sessions-status")
        signals.inventory_reported.connect(agent_reports.on_inventory_reported, dispatch_uid="sessions-inventory")
        signals.sessions_expected.connect(agent_reports.on_sessions_expected, dispatch_uid="sessions-expected")
        # An agent's sessions, as the agents API and the operator panel count them.
        AgentQuerySet.session_states = tuple(ACTIVE_STATES)
        from sessions_app import checks  # noqa: F401, PLC0415  (registers the session-origin checks)

from __future__ import annotations

from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "streamspace.portal"
    label = "portal"
    verbose_name = "Web portal"

    def ready(self) -> None:
        # The metrics collector reads every app's tables; the portal is the top layer that may
        # import them all, and ready() runs once the app registry is complete.
        from streamspace.metrics import register_collectors  # noqa: PLC0415

        register_collectors()  # scrape-time gauges for deploy/prometheus/alerts.yml

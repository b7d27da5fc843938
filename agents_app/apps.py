from django.apps import AppConfig


class AgentsAppConfig(AppConfig):
    name = "agents_app"
    verbose_name = "Agents"

    def ready(self) -> None:
        from streamspace.metrics import register_collectors

        register_collectors()  # scrape-time gauges for deploy/prometheus/alerts.yml

from django.apps import AppConfig


class PluginsAppConfig(AppConfig):
    name = "plugins_app"
    verbose_name = "Plugins"

    def ready(self) -> None:
        from plugins_app import bus, events

        if bus.on_event not in events._subscribers:
            events.subscribe(bus.on_event)

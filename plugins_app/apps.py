from django.apps import AppConfig


class PluginsAppConfig(AppConfig):
    name = "plugins_app"
    verbose_name = "Plugins"

    def ready(self) -> None:
        # Models and the bus (which reads models) load once the app registry is complete.
        from django.db.models.signals import post_delete, post_save  # noqa: PLC0415

        from plugins_app import bus  # noqa: PLC0415
        from plugins_app.models import Plugin  # noqa: PLC0415
        from streamspace import events  # noqa: PLC0415

        if bus.on_event not in events._subscribers:
            events.subscribe(bus.on_event)
        # Caches of plugin rows (subscriptions, active extensions, theme) are dropped on any
        # save or delete, including the admin's and direct ORM writes.
        post_save.connect(bus.plugins_changed, sender=Plugin, dispatch_uid="plugins-changed-save")
        post_delete.connect(bus.plugins_changed, sender=Plugin, dispatch_uid="plugins-changed-delete")

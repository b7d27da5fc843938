from django.apps import AppConfig


class PluginsAppConfig(AppConfig):
    name = "plugins_app"
    verbose_name = "Plugins"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from plugins_app import bus
        from plugins_app.models import Plugin
        from streamspace import events

        if bus.on_event not in events._subscribers:
            events.subscribe(bus.on_event)
        # Caches of plugin rows (subscriptions, active extensions, theme) are dropped on any
        # save or delete, including the admin's and direct ORM writes.
        post_save.connect(bus.plugins_changed, sender=Plugin, dispatch_uid="plugins-changed-save")
        post_delete.connect(bus.plugins_changed, sender=Plugin, dispatch_uid="plugins-changed-delete")

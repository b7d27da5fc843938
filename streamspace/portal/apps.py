from __future__ import annotations

from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "streamspace.portal"
    label = "portal"
    verbose_name = "Web portal"

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "streamspace.audit"
    label = "audit"
    verbose_name = "Audit"

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "streamspace.audit"
    label = "audit"
    verbose_name = "Audit"

    def ready(self) -> None:
        # The admin site and the audit admin need the app registry, complete only now.
        from django.contrib import admin  # noqa: PLC0415

        from streamspace.audit.admin import audit_admin_site  # noqa: PLC0415

        audit_admin_site(admin.site)

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "streamspace.audit"
    label = "audit"
    verbose_name = "Audit"

    def ready(self) -> None:
        # The admin site and the audit admin need the app registry, complete only now.
        from django.contrib import admin

        from streamspace.audit.admin import audit_admin_site

        audit_admin_site(admin.site)

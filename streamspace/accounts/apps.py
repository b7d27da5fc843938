from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "streamspace.accounts"
    label = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        # Receivers, checks and the admin need the app registry, complete only now.
        from django.contrib import admin  # noqa: PLC0415

        from streamspace.accounts import checks, receivers  # noqa: F401, PLC0415 (registers receivers and checks)
        from streamspace.accounts.admin_roles import apply_roles  # noqa: PLC0415
        from streamspace.accounts.views import admin_login_redirect  # noqa: PLC0415

        # The admin signs in through the portal login, so the second factor and the lockout
        # apply there too.
        admin.site.login = admin_login_redirect
        apply_roles(admin.site)

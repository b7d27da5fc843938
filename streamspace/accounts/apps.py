from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "streamspace.accounts"
    label = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from django.contrib import admin

        from streamspace.accounts import checks, receivers  # noqa: F401  (registers receivers and checks)
        from streamspace.accounts.admin_roles import apply_roles
        from streamspace.accounts.views import admin_login_redirect

        # The admin signs in through the portal login, so the second factor and the lockout
        # apply there too.
        admin.site.login = admin_login_redirect
        apply_roles(admin.site)

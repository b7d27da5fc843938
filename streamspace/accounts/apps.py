from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "streamspace.accounts"
    label = "accounts"
    verbose_name = "Accounts"

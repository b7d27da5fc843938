"""django-allauth hooks: the self sign-up switch and the TOTP step of the login flow."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from django.conf import settings


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: Any) -> bool:
        """Self sign-up only when ``STREAMSPACE_SIGNUP_ENABLED`` is on (default off)."""
        return bool(getattr(settings, "STREAMSPACE_SIGNUP_ENABLED", False))

    def get_login_stages(self) -> list[str]:
        return [*super().get_login_stages(), "streamspace.accounts.stages.TOTPStage"]

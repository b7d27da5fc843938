"""The second-factor step of allauth's login flow.

The password step leaves the login *stashed* (not yet a session); this stage sends users with
a confirmed TOTP device to ``account_login_totp`` and only its success completes the login.
"""

from __future__ import annotations

from allauth.account.stages import LoginStage
from allauth.core.internal.httpkit import headed_redirect_response

from streamspace.accounts import mfa


class TOTPStage(LoginStage):
    key = "streamspace_totp"
    urlname = "account_login_totp"

    def handle(self) -> tuple:
        user = self.login.user
        if user is None or not mfa.has_totp(user):
            return None, True
        return headed_redirect_response(self.urlname), True

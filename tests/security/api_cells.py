"""The REST API rows of the matrix: every endpoint of ``tests/api_matrix.py`` × every principal.

Each cell's expectation follows from the rules of ``docs/roles.md``, applied in order:

1. no user credential (anonymous, an agent token) → 401, unless the endpoint is open (``any``);
2. a role below the endpoint's least role → 403 (API tokens without the admin scope act as
   users);
3. a ``read`` token on a method that changes state → 403;
4. API tokens may not manage tokens or two-factor settings → 403 (:data:`NO_API_TOKEN`);
5. object rules: a session is seen by its owner, its share recipients, operators and admins,
   and managed (stopped, hibernated, woken) by its owner, operators and admins; a token
   only by its owner. Anyone else gets 404, so ids cannot be probed. A share recipient
   sees the session but may not list, grant or revoke its shares: 403 (:data:`FORBIDDEN_FOR`);
6. otherwise the endpoint's success status (:data:`OK`), reached with a valid request body.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.permissions import SAFE_METHODS
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

from agents_app.models import Agent
from plugins_app.models import Plugin, WebhookDelivery
from sessions_app.models import Session, SessionState, Share, Template, UserQuota
from streamspace.accounts.models import ApiToken, User
from tests.security.expect import Expectation, has_role
from tests.security.world import (
    ADMIN,
    ALICE,
    ANONYMOUS,
    API_TOKENS,
    BOB,
    CAROL,
    OPERATOR,
    OTHER_AGENT,
    PEOPLE,
    READ_TOKEN,
    World,
)
from tests.support.api_matrix import ANY, ENDPOINTS, Endpoint

NO_USER = frozenset({ANONYMOUS, OTHER_AGENT})

# Rule 4: a leaked token must not mint, revoke or change second factors (docs/roles.md).
NO_API_TOKEN = frozenset(
    {
        "POST /api/v1/tokens",
        "DELETE /api/v1/tokens/{token}",
        "POST /api/v1/mfa/totp",
        "DELETE /api/v1/mfa/totp",
        "POST /api/v1/mfa/totp/confirm",
        "POST /api/v1/mfa/recovery-codes",
    }
)
# Rule 4 for read tokens only (issue 15 item 5): a viewer URL lets its bearer type and click
# inside the session.
NOT_READ_SCOPE = frozenset(
    {"GET /api/v1/sessions/{session}/viewer-url", "GET /api/v1/sessions/{session}/turn"}  # the viewer's relay
)

# Rule 5: who gets 404.
SHARES = frozenset(
    {
        "GET /api/v1/sessions/{session}/shares",
        "POST /api/v1/sessions/{session}/shares",
        "DELETE /api/v1/sessions/{session}/shares/{share}",
    }
)
VIEW_SESSION = frozenset(
    {
        "GET /api/v1/sessions/{session}",
        "POST /api/v1/sessions/{session}/heartbeat",
        "GET /api/v1/sessions/{session}/viewer-url",
        *SHARES,
        "GET /api/v1/sessions/{session}/turn",
    }
)
MANAGE_SESSION = frozenset(
    {
        "DELETE /api/v1/sessions/{session}",
        "POST /api/v1/sessions/{session}/hibernate",
        "POST /api/v1/sessions/{session}/wake",
        "GET /api/v1/sessions/{session}/logs",  # the workload's output: the owner's
    }
)
OWN_TOKEN = frozenset({"GET /api/v1/tokens/{token}", "DELETE /api/v1/tokens/{token}"})
NOT_FOUND_FOR = {
    **dict.fromkeys(VIEW_SESSION, frozenset({BOB})),
    **dict.fromkeys(MANAGE_SESSION, frozenset({BOB, CAROL})),
    **dict.fromkeys(OWN_TOKEN, frozenset({BOB, CAROL, OPERATOR, ADMIN})),
}
# Rule 5, for those who see the session: only its owner (operators, admins) manages its shares.
FORBIDDEN_FOR = dict.fromkeys(SHARES, frozenset({CAROL}))

# Rule 6: the success status of each endpoint that does not answer 200.
OK = {
    "POST /api/v1/auth/logout": 204,
    "POST /api/v1/templates": 201,
    "DELETE /api/v1/templates/{slug}": 204,
    "POST /api/v1/sessions": 202,
    "DELETE /api/v1/sessions/{session}": 202,
    "POST /api/v1/sessions/{session}/hibernate": 202,
    "POST /api/v1/sessions/{session}/wake": 202,
    "POST /api/v1/sessions/{session}/heartbeat": 204,
    "POST /api/v1/agents": 201,
    "POST /api/v1/tokens": 201,
    "DELETE /api/v1/tokens/{token}": 204,
    "POST /api/v1/mfa/totp": 201,
    # Past every check, a wrong code for a user without two-factor is the answer of an
    # allowed caller (enrolling each principal for a 2xx adds nothing to the matrix).
    "DELETE /api/v1/mfa/totp": 400,
    "POST /api/v1/mfa/totp/confirm": 400,
    "POST /api/v1/mfa/recovery-codes": 400,
    "POST /api/v1/plugins": 201,
    "DELETE /api/v1/plugins/{plugin}": 204,
    "POST /api/v1/plugins/{plugin}/deliveries/{delivery}/redeliver": 202,
    "POST /api/v1/sessions/{session}/shares": 201,
    "DELETE /api/v1/sessions/{session}/shares/{share}": 204,
}

Body = Callable[[World, str], dict[str, Any]]
Effect = Callable[[World, str], bool]


def _refresh_of(world: World, principal: str) -> str:
    user = world.user_of(principal) or world.users[ALICE]
    return world.refresh[next(name for name in PEOPLE if world.users[name] == user)]


# Valid bodies: an allowed caller gets the success status, so a refusal is never a 400.
BODIES: dict[str, Body] = {
    "POST /api/v1/auth/login": lambda w, p: {"username": "alice", "password": "pw-alice"},
    "POST /api/v1/auth/refresh": lambda w, p: {"refresh": w.refresh[ALICE]},
    "POST /api/v1/auth/logout": lambda w, p: {"refresh": _refresh_of(w, p)},
    "POST /api/v1/templates": lambda w, p: {"slug": "new", "display_name": "New", "image": "registry.local/new:1"},
    "PATCH /api/v1/templates/{slug}": lambda w, p: {"display_name": "Renamed"},
    "POST /api/v1/sessions": lambda w, p: {"template": w.template.slug},
    "PUT /api/v1/users/{user}/quota": lambda w, p: {"max_sessions": 3},
    "POST /api/v1/agents": lambda w, p: {"agent_id": "new-agent", "platform": "docker"},
    "PATCH /api/v1/users/{user}": lambda w, p: {"role": "operator"},
    "POST /api/v1/tokens": lambda w, p: {"name": "another", "scope": "read"},
    "DELETE /api/v1/mfa/totp": lambda w, p: {"otp": "000000"},
    "POST /api/v1/mfa/totp/confirm": lambda w, p: {"otp": "000000"},
    "POST /api/v1/plugins": lambda w, p: {
        "name": "hook-2",
        "type": "webhook",
        "config": {"url": "https://93.184.215.14/hook", "secret": "s" * 24, "events": ["session.created"]},
    },
    "PATCH /api/v1/plugins/{plugin}": lambda w, p: {"enabled": False},
    "POST /api/v1/sessions/{session}/shares": lambda w, p: {"user": "bob", "role": "viewer"},
}

# Targets that differ from World.api_targets(): what the endpoint needs to succeed.
TARGETS: dict[str, Callable[[World], dict[str, Any]]] = {
    "POST /api/v1/sessions/{session}/wake": lambda w: {"session": w.hibernated.pk},
    "PATCH /api/v1/templates/{slug}": lambda w: {"slug": w.spare_template.slug},
    "DELETE /api/v1/templates/{slug}": lambda w: {"slug": w.spare_template.slug},
}


def _session_state(pick: Callable[[World], Session], state: str) -> Effect:
    return lambda w, p: Session.objects.get(pk=pick(w).pk).state == state


# What each state-changing endpoint changes, read back after the call: it must have changed
# exactly when the answer was a success.
EFFECTS: dict[str, Effect] = {
    "POST /api/v1/auth/refresh": lambda w, p: BlacklistedToken.objects.exists(),  # rotation
    "POST /api/v1/auth/logout": lambda w, p: BlacklistedToken.objects.exists(),
    "POST /api/v1/templates": lambda w, p: Template.objects.filter(slug="new").exists(),
    "PATCH /api/v1/templates/{slug}": lambda w, p: Template.objects.filter(display_name="Renamed").exists(),
    "DELETE /api/v1/templates/{slug}": lambda w, p: not Template.objects.filter(pk=w.spare_template.pk).exists(),
    "POST /api/v1/sessions": lambda w, p: Session.objects.exclude(pk__in=[w.running.pk, w.hibernated.pk]).exists(),
    "DELETE /api/v1/sessions/{session}": _session_state(lambda w: w.running, SessionState.STOPPING),
    "POST /api/v1/sessions/{session}/hibernate": _session_state(lambda w: w.running, SessionState.HIBERNATING),
    "POST /api/v1/sessions/{session}/wake": _session_state(lambda w: w.hibernated, SessionState.WAKING),
    "PUT /api/v1/users/{user}/quota": lambda w, p: UserQuota.objects.filter(max_sessions=3).exists(),
    "POST /api/v1/agents": lambda w, p: Agent.objects.filter(agent_id="new-agent").exists(),
    "PATCH /api/v1/users/{user}": lambda w, p: User.objects.filter(pk=w.users[ALICE].pk, role="operator").exists(),
    "POST /api/v1/tokens": lambda w, p: ApiToken.objects.filter(name="another").exists(),
    "DELETE /api/v1/tokens/{token}": lambda w, p: ApiToken.objects.filter(
        pk=w.target_token_pk, revoked_at__isnull=False
    ).exists(),
    "POST /api/v1/mfa/totp": lambda w, p: TOTPDevice.objects.exists(),
    "POST /api/v1/plugins": lambda w, p: Plugin.objects.filter(name="hook-2").exists(),
    "PATCH /api/v1/plugins/{plugin}": lambda w, p: Plugin.objects.filter(pk=w.extra["plugin"], enabled=False).exists(),
    "DELETE /api/v1/plugins/{plugin}": lambda w, p: not Plugin.objects.filter(pk=w.extra["plugin"]).exists(),
    "POST /api/v1/sessions/{session}/shares": lambda w, p: Share.objects.filter(user=w.users[BOB]).exists(),
    "DELETE /api/v1/sessions/{session}/shares/{share}": lambda w, p: (
        not Share.objects.filter(pk=w.extra["share"]).exists()
    ),
    "POST /api/v1/plugins/{plugin}/deliveries/{delivery}/redeliver": lambda w, p: (
        WebhookDelivery.objects.filter(plugin_id=w.extra["plugin"]).count() > 1
    ),
}


@dataclass(frozen=True)
class ApiRow:
    endpoint: Endpoint

    @property
    def key(self) -> str:
        return f"{self.endpoint.method.upper()} {self.endpoint.path}"

    @property
    def safe(self) -> bool:
        return self.endpoint.method.upper() in SAFE_METHODS

    def path(self, world: World) -> str:
        targets = world.api_targets()
        if self.key in TARGETS:
            targets.update(TARGETS[self.key](world))
        return self.endpoint.path.format(**targets)

    def body(self, world: World, principal: str) -> dict[str, Any]:
        return BODIES[self.key](world, principal) if self.key in BODIES else {}

    def changed(self, world: World, principal: str) -> bool | None:
        """Whether the call changed what :data:`EFFECTS` reads (None: nothing to read)."""
        effect = EFFECTS.get(self.key)
        return effect(world, principal) if effect else None

    def expect(self, principal: str) -> Expectation:
        least = self.endpoint.role
        if least == ANY:
            return OK.get(self.key, 200)
        if principal in NO_USER:
            return 401
        if not has_role(principal, least):
            return 403
        if principal == READ_TOKEN and (not self.safe or self.key in NOT_READ_SCOPE):
            return 403
        if principal in API_TOKENS and self.key in NO_API_TOKEN:
            return 403
        if principal in NOT_FOUND_FOR.get(self.key, ()):
            return 404
        if principal in FORBIDDEN_FOR.get(self.key, ()):
            return 403
        return OK.get(self.key, 200)


API_ROWS = [ApiRow(endpoint) for endpoint in ENDPOINTS]

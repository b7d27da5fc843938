"""The table of every API endpoint and the least role that may call it.

Used by the anonymous/forbidden tests and the malformed-input tests, so a new endpoint that
is not listed here fails ``test_every_route_is_in_the_matrix``.
"""

from __future__ import annotations

from dataclasses import dataclass

ANY = "any"  # no authentication needed
USER = "user"
OPERATOR = "operator"
ADMIN = "admin"
ROLE_RANK = {USER: 0, OPERATOR: 1, ADMIN: 2}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {session}, {slug}, {user}, {agent}, {plugin}, {delivery}, {share} are filled by the fixture
    role: str


ENDPOINTS = [
    Endpoint("post", "/api/v1/auth/login", ANY),
    Endpoint("post", "/api/v1/auth/refresh", ANY),
    Endpoint("get", "/api/v1/users/me", USER),
    Endpoint("get", "/api/v1/templates", USER),
    Endpoint("post", "/api/v1/templates", OPERATOR),
    Endpoint("get", "/api/v1/templates/{slug}", USER),
    Endpoint("patch", "/api/v1/templates/{slug}", OPERATOR),
    Endpoint("delete", "/api/v1/templates/{slug}", OPERATOR),
    Endpoint("get", "/api/v1/sessions", USER),
    Endpoint("post", "/api/v1/sessions", USER),
    Endpoint("get", "/api/v1/sessions/{session}", USER),
    Endpoint("delete", "/api/v1/sessions/{session}", USER),
    Endpoint("post", "/api/v1/sessions/{session}/hibernate", USER),
    Endpoint("post", "/api/v1/sessions/{session}/wake", USER),
    Endpoint("post", "/api/v1/sessions/{session}/heartbeat", USER),
    Endpoint("get", "/api/v1/sessions/{session}/viewer-url", USER),
    Endpoint("get", "/api/v1/sessions/{session}/turn", USER),
    Endpoint("get", "/api/v1/sessions/{session}/logs", USER),
    Endpoint("get", "/api/v1/sessions/{session}/shares", USER),
    Endpoint("post", "/api/v1/sessions/{session}/shares", USER),
    Endpoint("delete", "/api/v1/sessions/{session}/shares/{share}", USER),
    Endpoint("get", "/api/v1/users/me/quota", USER),
    Endpoint("get", "/api/v1/users/{user}/quota", ADMIN),
    Endpoint("put", "/api/v1/users/{user}/quota", ADMIN),
    Endpoint("get", "/api/v1/usage", USER),
    Endpoint("get", "/api/v1/agents", OPERATOR),
    Endpoint("post", "/api/v1/agents", ADMIN),
    Endpoint("get", "/api/v1/agents/{agent}", OPERATOR),
    Endpoint("get", "/api/v1/audit", ADMIN),
    # identity ({token}: one of alice's API tokens)
    Endpoint("post", "/api/v1/auth/logout", USER),
    Endpoint("get", "/api/v1/users", ADMIN),
    Endpoint("get", "/api/v1/users/{user}", ADMIN),
    Endpoint("patch", "/api/v1/users/{user}", ADMIN),
    Endpoint("get", "/api/v1/tokens", USER),
    Endpoint("post", "/api/v1/tokens", USER),
    Endpoint("get", "/api/v1/tokens/{token}", USER),
    Endpoint("delete", "/api/v1/tokens/{token}", USER),
    Endpoint("get", "/api/v1/mfa", USER),
    Endpoint("post", "/api/v1/mfa/totp", USER),
    Endpoint("delete", "/api/v1/mfa/totp", USER),
    Endpoint("post", "/api/v1/mfa/totp/confirm", USER),
    Endpoint("post", "/api/v1/mfa/recovery-codes", USER),
    # plugins ({plugin}: a webhook plugin's id, {delivery}: one of its delivery ids)
    Endpoint("get", "/api/v1/plugins", ADMIN),
    Endpoint("post", "/api/v1/plugins", ADMIN),
    Endpoint("get", "/api/v1/plugins/available", ADMIN),
    Endpoint("get", "/api/v1/plugins/{plugin}", ADMIN),
    Endpoint("patch", "/api/v1/plugins/{plugin}", ADMIN),
    Endpoint("delete", "/api/v1/plugins/{plugin}", ADMIN),
    Endpoint("get", "/api/v1/plugins/{plugin}/deliveries", ADMIN),
    Endpoint("post", "/api/v1/plugins/{plugin}/deliveries/{delivery}/redeliver", ADMIN),
    # routes of the in-tree example extension (tests/example_plugin), 404 until it is enabled
    Endpoint("get", "/api/v1/plugins/example/", USER),
    Endpoint("get", "/api/v1/plugins/example/events", USER),
]

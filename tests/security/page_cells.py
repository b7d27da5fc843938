"""The portal's rows: every non-API route (portal pages, sign-in pages, SSO, API docs,
health, the Django admin's entry) × every principal.

Portal pages authenticate with the Django session cookie only. API tokens and agent tokens
are not portal credentials: their holders are anonymous here. Each row gives what a caller
without a portal sign-in gets (``anon``), the least role a signed-in caller needs
(``least``, else ``refused``), an object rule (``not_found_for``: who gets 404 instead), and
what an allowed caller gets (``ok``). ``effect`` reads back the change a state-changing row
makes: it must have happened exactly for the callers it names (``changes_for``).

The Django admin's model pages are generated per registered model; their rights
(``docs/roles.md``, "Django admin") are checked model by model in
``tests/identity/test_admin_roles.py``, so this table has the admin's entry points and
:data:`ADMIN_SUBTREE` covers the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.sessions.models import Session as DjangoSession

from sessions_app.models import Session, SessionState, Template, UserQuota
from streamspace.accounts.models import ApiToken
from tests.security.expect import LOGIN, Expectation, Redirect, has_role
from tests.security.world import ADMIN, ALICE, BOB, CAROL, OPERATOR, OTHER_AGENT, PEOPLE, World
from tests.support.api_matrix import ADMIN as ROLE_ADMIN
from tests.support.api_matrix import ANY
from tests.support.api_matrix import OPERATOR as ROLE_OPERATOR
from tests.support.api_matrix import USER as ROLE_USER

ADMIN_SUBTREE = "/admin/"
ADMIN_LOGIN = Redirect("/admin/login/")
HOME = Redirect("/")

# Who gets 404 from a page about alice's session (viewed by its owner, share recipients,
# operators, admins; managed by all of them but share recipients) or about her own things.
CANNOT_VIEW = frozenset({BOB})
CANNOT_MANAGE = frozenset({BOB, CAROL})
NOT_THE_OWNER = frozenset({BOB, CAROL, OPERATOR, ADMIN})

Path = Callable[[World], str]
Data = Callable[[World, str], dict[str, Any]]
Effect = Callable[[World, str], bool]


@dataclass(frozen=True)
class Page:
    method: str
    pattern: str  # the route's pattern (tests/security/routes.py)
    path: Path
    anon: Expectation
    ok: Expectation
    least: str = ANY
    refused: Expectation = 403
    not_found_for: frozenset[str] = frozenset()
    data: Data | None = None
    json: bool = False  # ask for JSON (the portal's scripts do; answers carry the API status)
    effect: Effect | None = None
    effect_by: frozenset[str] | None = None  # who makes the change; default: who gets ``ok``
    variant: str = ""  # tells rows of one route and method apart
    csrf_exempt: bool = False
    overrides: dict[str, Expectation] = field(default_factory=dict)  # cells the rules above do not give

    @property
    def key(self) -> str:
        return f"{self.method} {self.pattern}" + (f" [{self.variant}]" if self.variant else "")

    def expect(self, principal: str) -> Expectation:
        if principal in self.overrides:
            return self.overrides[principal]
        if principal not in PEOPLE:  # no portal sign-in
            return self.anon
        if self.least != ANY and not has_role(principal, self.least):
            return self.refused
        if principal in self.not_found_for:
            return 404
        return self.ok

    def changes_for(self, principal: str) -> bool:
        """Whether ``principal``'s request must make the change ``effect`` reads back."""
        if self.effect_by is not None:
            return principal in self.effect_by
        return principal in PEOPLE and self.expect(principal) == self.ok


def _state(session: Callable[[World], Session], state: str) -> Effect:
    return lambda w, p: Session.objects.get(pk=session(w).pk).state == state


def _running(w: World) -> Session:
    return w.running


def _hibernated(w: World) -> Session:
    return w.hibernated


def _person(w: World, p: str) -> Any:
    """The principal's user; alice for callers without one (their requests are refused)."""
    return w.user_of(p) or w.users[ALICE]


def _signed_out(w: World, p: str) -> bool:
    cookie = w.credentials[p].portal_cookie
    return bool(cookie) and not DjangoSession.objects.filter(session_key=cookie).exists()


TEMPLATE_FORM = {
    "slug": "from-portal",
    "display_name": "From the portal",
    "image": "registry.local/portal:1",
    "default_cpu_millicores": "1000",
    "default_memory_mb": "1024",
    "streaming_port": "8080",
    "command": "[]",
    "env": "{}",
    "volume_mounts": "[]",
    "tags": "[]",
    "enabled": "on",
}


def _uploaded_icon(w: World) -> str:
    """The catalog template's icon URL, after giving it an uploaded icon."""
    w.template.set_icon_file(b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml")
    w.template.save(update_fields=["icon_file", "icon_file_type", "icon_digest"])
    return f"/catalog/icons/{w.template.slug}"


SESSION = "/sessions/<uuid:session_id>/"
PAGES: list[Page] = [
    # --- the portal ---------------------------------------------------------------------
    Page("GET", "/", lambda w: "/", LOGIN, 200, ROLE_USER),
    Page(
        "POST",
        "/launch/<slug:slug>",
        lambda w: f"/launch/{w.template.slug}",
        LOGIN,
        Redirect("/sessions/", prefix=True),  # the new session's progress page
        ROLE_USER,
        effect=lambda w, p: Session.objects.exclude(pk__in=[w.running.pk, w.hibernated.pk]).exists(),
    ),
    Page("GET", "/sessions/", lambda w: "/sessions/", LOGIN, 200, ROLE_USER),
    Page("GET", "/usage/", lambda w: "/usage/", LOGIN, 200, ROLE_USER),
    Page("GET", "/catalog/icons/<slug:slug>", _uploaded_icon, LOGIN, 200, ROLE_USER),
    Page("GET", SESSION, lambda w: f"/sessions/{w.running.pk}/", LOGIN, 200, ROLE_USER, not_found_for=CANNOT_VIEW),
    Page(
        "GET",
        SESSION + "view",
        lambda w: f"/sessions/{w.running.pk}/view",
        LOGIN,
        200,
        ROLE_USER,
        not_found_for=CANNOT_VIEW,
    ),
    # Opening a hibernated session wakes it only for who may manage it.
    Page(
        "GET",
        SESSION + "view",
        lambda w: f"/sessions/{w.hibernated.pk}/view",
        LOGIN,
        200,
        ROLE_USER,
        not_found_for=CANNOT_VIEW,
        variant="hibernated: wakes for owner, operator, admin",
        effect=_state(_hibernated, SessionState.WAKING),
        effect_by=frozenset({ALICE, OPERATOR, ADMIN}),
    ),
    *[
        Page(
            "POST",
            SESSION + "<str:action>",
            (lambda a, s: lambda w: f"/sessions/{s(w).pk}/{a}")(action, target),
            LOGIN,
            202,
            ROLE_USER,
            not_found_for=CANNOT_MANAGE,
            json=True,
            variant=action,
            effect=_state(target, state),
        )
        for action, target, state in (
            ("hibernate", _running, SessionState.HIBERNATING),
            ("wake", _hibernated, SessionState.WAKING),
            ("stop", _running, SessionState.STOPPING),
        )
    ],
    # --- operator pages -------------------------------------------------------------------
    *[
        Page("GET", pattern, (lambda p: lambda w: p)(pattern), LOGIN, 200, least)
        for pattern, least in (
            ("/ops/", ROLE_OPERATOR),
            ("/ops/agents/", ROLE_OPERATOR),
            ("/ops/sessions/", ROLE_OPERATOR),
            ("/ops/users/", ROLE_ADMIN),
            ("/ops/templates/", ROLE_OPERATOR),
            ("/ops/templates/new", ROLE_OPERATOR),
            ("/ops/usage/", ROLE_OPERATOR),
            ("/ops/plugins/", ROLE_ADMIN),
            ("/ops/audit/", ROLE_ADMIN),
        )
    ],
    Page(
        "POST",
        "/ops/sessions/",
        lambda w: "/ops/sessions/",
        LOGIN,
        Redirect("/ops/sessions/"),
        ROLE_OPERATOR,
        data=lambda w, p: {"sessions": [str(w.running.pk)]},
        effect=_state(_running, SessionState.STOPPING),
    ),
    Page(
        "GET",
        "/ops/users/<int:user_id>/quota",
        lambda w: f"/ops/users/{w.users[ALICE].pk}/quota",
        LOGIN,
        200,
        ROLE_ADMIN,
    ),
    Page(
        "POST",
        "/ops/users/<int:user_id>/quota",
        lambda w: f"/ops/users/{w.users[ALICE].pk}/quota",
        LOGIN,
        Redirect("/ops/users/"),
        ROLE_ADMIN,
        data=lambda w, p: {"max_sessions": "3"},
        effect=lambda w, p: UserQuota.objects.filter(user=w.users[ALICE], max_sessions=3).exists(),
    ),
    Page(
        "POST",
        "/ops/templates/new",
        lambda w: "/ops/templates/new",
        LOGIN,
        Redirect("/ops/templates/"),
        ROLE_OPERATOR,
        data=lambda w, p: TEMPLATE_FORM,
        effect=lambda w, p: Template.objects.filter(slug="from-portal").exists(),
    ),
    Page(
        "GET",
        "/ops/templates/<slug:slug>",
        lambda w: f"/ops/templates/{w.spare_template.slug}",
        LOGIN,
        200,
        ROLE_OPERATOR,
    ),
    Page(
        "POST",
        "/ops/templates/<slug:slug>",
        lambda w: f"/ops/templates/{w.spare_template.slug}",
        LOGIN,
        Redirect("/ops/templates/"),
        ROLE_OPERATOR,
        data=lambda w, p: {**TEMPLATE_FORM, "slug": w.spare_template.slug, "display_name": "Edited"},
        effect=lambda w, p: Template.objects.filter(pk=w.spare_template.pk, display_name="Edited").exists(),
    ),
    # --- the account area (ours) ------------------------------------------------------------
    Page("GET", "/accounts/login/code/", lambda w: "/accounts/login/code/", LOGIN, HOME),
    *[
        Page("GET", pattern, (lambda p: lambda w: p)(pattern), LOGIN, 200, ROLE_USER)
        for pattern in ("/accounts/security/two-factor/", "/accounts/security/two-factor/setup/")
    ],
    Page(
        "POST",
        "/accounts/security/two-factor/setup/",
        lambda w: "/accounts/security/two-factor/setup/",
        LOGIN,
        200,  # a wrong code: the form again
        ROLE_USER,
        data=lambda w, p: {"code": "000000"},
    ),
    *[
        Page(
            "POST",
            pattern,
            (lambda p: lambda w: p)(pattern),
            LOGIN,
            Redirect("/accounts/security/two-factor/"),  # two-factor is off: nothing to do
            ROLE_USER,
            data=lambda w, p: {"code": "000000"},
        )
        for pattern in ("/accounts/security/two-factor/recovery-codes/", "/accounts/security/two-factor/remove/")
    ],
    Page("GET", "/accounts/security/tokens/", lambda w: "/accounts/security/tokens/", LOGIN, 200, ROLE_USER),
    Page(
        "POST",
        "/accounts/security/tokens/",
        lambda w: "/accounts/security/tokens/",
        LOGIN,
        200,
        ROLE_USER,
        data=lambda w, p: {"name": "from the portal", "scope": "read", "expires_in_days": "7"},
        effect=lambda w, p: ApiToken.objects.filter(name="from the portal", user=w.user_of(p)).exists(),
    ),
    Page(
        "POST",
        "/accounts/security/tokens/<int:token_id>/revoke/",
        lambda w: f"/accounts/security/tokens/{w.target_token_pk}/revoke/",
        LOGIN,
        Redirect("/accounts/security/tokens/"),
        ROLE_USER,
        not_found_for=NOT_THE_OWNER,
        effect=lambda w, p: ApiToken.objects.filter(pk=w.target_token_pk, revoked_at__isnull=False).exists(),
    ),
    # --- sign-in pages (django-allauth) -----------------------------------------------------
    Page("GET", "/accounts/login/", lambda w: "/accounts/login/", 200, HOME),
    Page(
        "POST",
        "/accounts/login/",
        lambda w: "/accounts/login/",
        HOME,  # signed in as alice with her password
        HOME,
        data=lambda w, p: {"login": "alice", "password": "pw-alice"},
    ),
    Page("GET", "/accounts/logout/", lambda w: "/accounts/logout/", LOGIN, 200),
    Page("POST", "/accounts/logout/", lambda w: "/accounts/logout/", LOGIN, LOGIN, effect=_signed_out),
    Page("GET", "/accounts/inactive/", lambda w: "/accounts/inactive/", 200, 200),
    # Self sign-up is off by default: the "sign-up closed" page, whatever is posted.
    Page("GET", "/accounts/signup/", lambda w: "/accounts/signup/", 200, HOME),
    Page(
        "POST",
        "/accounts/signup/",
        lambda w: "/accounts/signup/",
        200,
        HOME,
        data=lambda w, p: {
            "username": "mallory",
            "email": "m@example.com",
            "password1": "x" * 12,
            "password2": "x" * 12,
        },
    ),
    Page("GET", "/accounts/reauthenticate/", lambda w: "/accounts/reauthenticate/", LOGIN, 200),
    Page("POST", "/accounts/reauthenticate/", lambda w: "/accounts/reauthenticate/", LOGIN, 200),
    Page(
        "GET",
        "/accounts/reauthenticate/code/",
        lambda w: "/accounts/reauthenticate/code/",
        LOGIN,
        Redirect("/accounts/reauthenticate/"),
    ),
    Page(
        "GET",
        "/accounts/reauthenticate/code/confirm/",
        lambda w: "/accounts/reauthenticate/code/confirm/",
        LOGIN,
        Redirect("/accounts/reauthenticate/code/"),
    ),
    Page("GET", "/accounts/email/", lambda w: "/accounts/email/", LOGIN, 200),
    Page("POST", "/accounts/email/", lambda w: "/accounts/email/", LOGIN, Redirect("/accounts/email/")),
    Page("GET", "/accounts/confirm-email/", lambda w: "/accounts/confirm-email/", 200, 200),
    Page("GET", "/accounts/password/change/", lambda w: "/accounts/password/change/", LOGIN, 200),
    Page(
        "POST",
        "/accounts/password/change/",
        lambda w: "/accounts/password/change/",
        LOGIN,
        Redirect("/accounts/password/change/"),
        data=lambda w, p: {
            "oldpassword": f"pw-{_person(w, p).username}",
            "password1": "N3w-pass!",
            "password2": "N3w-pass!",
        },
        effect=lambda w, p: type(_person(w, p)).objects.get(pk=_person(w, p).pk).check_password("N3w-pass!"),
    ),
    Page(
        "GET",
        "/accounts/password/set/",
        lambda w: "/accounts/password/set/",
        LOGIN,
        Redirect("/accounts/password/change/"),
    ),
    Page("GET", "/accounts/password/reset/", lambda w: "/accounts/password/reset/", 200, 200),
    Page(
        "POST",
        "/accounts/password/reset/",
        lambda w: "/accounts/password/reset/",
        Redirect("/accounts/password/reset/done/"),
        Redirect("/accounts/password/reset/done/"),
        data=lambda w, p: {"email": "alice@example.com"},
    ),
    Page("GET", "/accounts/login/code/confirm/", lambda w: "/accounts/login/code/confirm/", LOGIN, HOME),
    Page(
        "GET",
        "/accounts/^confirm-email/(?P<key>[-:\\w]+)/$",
        lambda w: "/accounts/confirm-email/not-a-key/",
        200,  # "this link is invalid"
        200,
    ),
    Page("GET", "/accounts/password/reset/key/done/", lambda w: "/accounts/password/reset/key/done/", 200, 200),
    Page(
        "GET",
        "/accounts/^password/reset/key/(?P<uidb36>[0-9A-Za-z]+)-(?P<key>.+)/$",
        lambda w: "/accounts/password/reset/key/1-not-a-key/",
        200,  # "this link is invalid"
        200,
    ),
    Page("GET", "/accounts/password/reset/done/", lambda w: "/accounts/password/reset/done/", 200, 200),
    # --- single sign-on: 404 while not configured (the default) ---------------------------
    *[
        Page(method, pattern, (lambda p: lambda w: p)(pattern), 404, 404, csrf_exempt=True)
        for pattern in (
            "/oidc/authenticate/",
            "/oidc/callback/",
            "/saml2/login/",
            "/saml2/acs/",
            "/saml2/logout/",
            "/saml2/ls/",
            "/saml2/ls/post/",
            "/saml2/metadata/",
        )
        for method in ("GET", "POST")
    ],
    # --- API description, probes ----------------------------------------------------------
    # Public, but a credential that is not valid is refused rather than ignored.
    Page("GET", "/api/schema/", lambda w: "/api/schema/", 200, 200, overrides={OTHER_AGENT: 401}),
    Page("GET", "/api/docs/", lambda w: "/api/docs/", 200, 200, overrides={OTHER_AGENT: 401}),
    Page("GET", "/healthz", lambda w: "/healthz", 200, 200),
    Page("GET", "/readyz", lambda w: "/readyz", 200, 200),
    # Prometheus metrics are public on the control plane; deployments keep /metrics off the
    # public ingress (docs/security.md, deployment checklist).
    Page("GET", "/metrics", lambda w: "/metrics", 200, 200),
    # --- the Django admin's entry points ----------------------------------------------------
    Page("GET", "/admin/", lambda w: "/admin/", ADMIN_LOGIN, 200, ROLE_OPERATOR, refused=ADMIN_LOGIN),
    Page("GET", "/admin/login/", lambda w: "/admin/login/", LOGIN, Redirect("/admin/"), ROLE_OPERATOR),
    # Who may not use the admin is sent to its index, still signed in to the portal.
    Page(
        "POST",
        "/admin/logout/",
        lambda w: "/admin/logout/",
        Redirect("/admin/"),
        200,
        ROLE_OPERATOR,
        refused=Redirect("/admin/"),
        effect=_signed_out,
    ),
]


def pages_by_pattern(pages: list[Page]) -> dict[str, list[Page]]:
    """The rows of each route pattern (several rows may exercise one route)."""
    index: dict[str, list[Page]] = {}
    for page in pages:
        index.setdefault(page.pattern, []).append(page)
    return index

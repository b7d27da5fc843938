"""The principals of the authorization matrix and the rows they act on.

One :class:`World` is built per test module (``tests/security/conftest.py``) and every cell
runs inside a savepoint that is rolled back, so each cell sees exactly this world.

Principals (``docs/security.md`` explains what each is trusted with):

=============== ======================================================================
anonymous       no credential at all
alice           a user, owner of the two sessions
bob             another user (no share)
carol           a user alice's sessions are shared with (a collaborator ``Share``)
operator        role operator
admin           role admin
read_token      alice's API token with the ``read`` scope (``Authorization: Token``)
write_token     alice's API token with the ``write`` scope
other_agent     the token of an agent that does not run alice's sessions
=============== ======================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.test import Client
from django.utils import timezone
from rest_framework_simplejwt.tokens import RefreshToken

from agents_app.models import Agent, AgentCommand, AgentInstance
from agents_app.tokens import hash_token
from plugins_app.services import install_plugin
from sessions_app.models import Session, SessionState, Share, Template
from streamspace.accounts.models import Role, TokenScope, User
from streamspace.accounts.tokens import create_token
from tests.support.factories import make_user, share
from tests.support.plugin_factories import matrix_targets

ANONYMOUS = "anonymous"
ALICE = "alice"
BOB = "bob"
CAROL = "carol"
OPERATOR = "operator"
ADMIN = "admin"
READ_TOKEN = "read_token"
WRITE_TOKEN = "write_token"
OTHER_AGENT = "other_agent"

PRINCIPALS = (ANONYMOUS, ALICE, BOB, CAROL, OPERATOR, ADMIN, READ_TOKEN, WRITE_TOKEN, OTHER_AGENT)
PEOPLE = (ALICE, BOB, CAROL, OPERATOR, ADMIN)  # principals who sign in (JWT, portal cookie)
API_TOKENS = (READ_TOKEN, WRITE_TOKEN)

SESSION_AGENT_TOKEN = "matrix-agent-token"  # the agent that runs alice's sessions
OTHER_AGENT_TOKEN = "other-agent-token"


@dataclass(frozen=True)
class Credential:
    """What one principal presents: ``user`` is who the control plane should see (None for
    the anonymous caller and the agent), ``secret`` the header credential, ``scheme`` its
    ``Authorization`` scheme, ``portal_cookie`` the Django session id after a portal sign-in."""

    principal: str
    user: User | None = None
    secret: str = ""
    scheme: str = ""
    portal_cookie: str = ""

    @property
    def authorization(self) -> str:
        return f"{self.scheme} {self.secret}" if self.secret else ""


@dataclass
class World:
    users: dict[str, User]
    credentials: dict[str, Credential]
    template: Template  # has sessions (cannot be deleted)
    spare_template: Template  # no sessions (patched and deleted by the cells)
    session_agent: Agent
    other_agent: Agent
    running: Session  # alice's, shared with carol
    hibernated: Session  # alice's, shared with carol
    command: AgentCommand  # sent to the session agent, not acknowledged yet
    target_token_pk: int  # one more of alice's tokens (the {token} of the API)
    refresh: dict[str, str]  # a refresh JWT per person
    extra: dict[str, Any] = field(default_factory=dict)  # {plugin}, {delivery}

    def user_of(self, principal: str) -> User | None:
        return self.credentials[principal].user

    def api_targets(self) -> dict[str, Any]:
        """Values of the ``{placeholders}`` of ``tests/api_matrix.py``."""
        return {
            "session": self.running.pk,
            "slug": self.template.slug,
            "user": self.users[ALICE].pk,
            "agent": self.session_agent.agent_id,
            "token": self.target_token_pk,
            **self.extra,
        }


def _session(owner: User, template: Template, agent: Agent, state: str, endpoint: str, sharee: User) -> Session:
    now = timezone.now()
    session = Session.objects.create(
        name=f"alice {state}",
        user=owner,
        template=template,
        agent=agent,
        platform=agent.platform,
        state=state,
        cpu_millicores=100,
        memory_mb=128,
        idle_timeout_s=600,
        streaming_ready=state == SessionState.RUNNING,
        streaming_port=8080,
        endpoint=endpoint,
        last_activity=now,
        state_changed_at=now,
    )
    share(session, sharee)
    return session


def _portal_cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def build_world(upstream_endpoint: str) -> World:
    """Create every row the matrix needs; ``upstream_endpoint`` is where the sessions answer."""
    users = {
        ALICE: make_user("alice"),
        BOB: make_user("bob"),
        CAROL: make_user("carol"),
        OPERATOR: make_user("olivia", Role.OPERATOR),
        ADMIN: make_user("admin", Role.ADMIN),
    }
    template = Template.objects.create(slug="xfce", display_name="XFCE", image="registry.local/xfce:1")
    spare = Template.objects.create(slug="spare", display_name="Spare", image="registry.local/spare:1")
    session_agent = Agent.objects.create(
        agent_id="docker-1", platform="docker", token_hash=hash_token(SESSION_AGENT_TOKEN)
    )
    # Its leader is connected (launches are placed on it) on no channel (commands stay pending).
    AgentInstance.objects.create(agent=session_agent, instance_id="docker-1-leader", is_leader=True, connected=True)
    other_agent = Agent.objects.create(agent_id="other-1", platform="docker", token_hash=hash_token(OTHER_AGENT_TOKEN))
    alice, carol = users[ALICE], users[CAROL]
    running = _session(alice, template, session_agent, SessionState.RUNNING, upstream_endpoint, carol)
    hibernated = _session(alice, template, session_agent, SessionState.HIBERNATED, upstream_endpoint, carol)
    command = AgentCommand.objects.create(agent=session_agent, session=running, action="stop", state="sent")
    _, read_key = create_token(alice, name="matrix read", scope=TokenScope.READ)
    _, write_key = create_token(alice, name="matrix write", scope=TokenScope.WRITE)
    target_token, _ = create_token(alice, name="matrix target")
    install_plugin(name="example", type="extension", config={"greeting": "hej"}, actor=users[ADMIN])
    credentials = {
        ANONYMOUS: Credential(ANONYMOUS),
        **{
            name: Credential(
                name,
                user=user,
                secret=str(RefreshToken.for_user(user).access_token),
                scheme="Bearer",
                portal_cookie=_portal_cookie(user),
            )
            for name, user in users.items()
        },
        READ_TOKEN: Credential(READ_TOKEN, user=alice, secret=read_key, scheme="Token"),
        WRITE_TOKEN: Credential(WRITE_TOKEN, user=alice, secret=write_key, scheme="Token"),
        OTHER_AGENT: Credential(OTHER_AGENT, secret=OTHER_AGENT_TOKEN, scheme="Bearer"),
    }
    return World(
        users=users,
        credentials=credentials,
        template=template,
        spare_template=spare,
        session_agent=session_agent,
        other_agent=other_agent,
        running=running,
        hibernated=hibernated,
        command=command,
        target_token_pk=target_token.pk,
        refresh={name: str(RefreshToken.for_user(user)) for name, user in users.items()},
        extra={**matrix_targets(), "share": Share.objects.get(session=running, user=carol).pk},
    )

"""The socket and session-proxy rows of the matrix.

Surfaces (``tests/security/routes.py`` lists them from the routing):

* the portal's live socket ``/ws/portal/`` (the portal cookie, same-origin browsers only);
* the session proxy ``/api/v1/http/<id>/`` over HTTP and WebSocket, for a running and a
  hibernated session, with each credential a person can hold: a viewer link (``?token=``),
  the viewer cookie it is exchanged for, an access JWT (``Authorization: Bearer``), and the
  portal's login cookie sent by a browser;
* the agent socket ``/api/v1/agents/connect`` and the tunnel endpoint
  ``/api/v1/agents/tunnel/<stream_id>`` (an agent token is a host-level credential: what
  another agent's token can and cannot do there is part of the matrix).

Callers present what they hold: people their credential of the row, API tokens
``Authorization: Token``, the other agent ``Authorization: Bearer <agent token>``; on the
agent endpoints everyone presents their secret as ``Bearer`` (the scheme agents use).
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.security.expect import ACCEPT, REFUSE, Expectation
from tests.security.world import (
    ADMIN,
    ALICE,
    ANONYMOUS,
    BOB,
    CAROL,
    OPERATOR,
    OTHER_AGENT,
    PEOPLE,
    PRINCIPALS,
    READ_TOKEN,
    WRITE_TOKEN,
)

PORTAL_WS = "/ws/portal/"
AGENT_SOCKET = "/api/v1/agents/connect"
TUNNEL = "/api/v1/agents/tunnel/<str:stream_id>"
PROXY_HTTP = "http /api/v1/http/"
PROXY_WS = "websocket /api/v1/http/"

SESSION_UPDATE = "session.update"  # the portal socket answers with the session
NOT_FOUND_FRAME = "error"  # ... or with an error frame

VIEWERS = frozenset({ALICE, CAROL, OPERATOR, ADMIN})  # may view alice's sessions
MANAGERS = frozenset({ALICE, OPERATOR, ADMIN})  # may wake them

PERSON_CREDENTIALS = ("viewer-link", "viewer-cookie", "bearer-jwt", "portal-cookie")
OWN_CREDENTIAL = {ANONYMOUS: "no-credential", READ_TOKEN: "token-header", WRITE_TOKEN: "token-header"}
OWN_CREDENTIAL[OTHER_AGENT] = "agent-bearer"


@dataclass(frozen=True)
class SocketRow:
    """A row of one socket surface: ``route`` (from the routing), ``name`` (the scenario)."""

    route: str
    name: str

    @property
    def key(self) -> str:
        return self.name


@dataclass(frozen=True)
class ProxyCell:
    kind: str  # GET, POST or WS
    target: str  # "running" or "hibernated"
    credential: str
    principal: str

    @property
    def route(self) -> str:
        return PROXY_WS if self.kind == "WS" else PROXY_HTTP

    @property
    def row(self) -> str:
        return f"{self.kind} /api/v1/http/{{{self.target}}}/ {self.credential}"

    def expect(self) -> Expectation:
        """What the intended rules answer (docs/security.md); PENDING marks the cells that
        differ from today's behaviour."""
        who, websocket = self.principal, self.kind == "WS"
        if who not in PEOPLE or self.credential == "portal-cookie":
            return REFUSE if websocket else 401  # no proxy credential
        if who not in VIEWERS:
            return REFUSE if websocket else 403
        if self.target == "hibernated" and who not in MANAGERS:
            # A share recipient views but does not wake (the owner's quota); the viewer
            # link's GET only sets the cookie, before any wake.
            if self.kind == "GET" and self.credential == "viewer-link":
                return 303
            return REFUSE if websocket else 403
        if websocket:
            return ACCEPT
        if self.kind == "GET" and self.credential == "viewer-link":
            return 303  # the token is exchanged for the cookie, and dropped from the URL
        return 503 if self.target == "hibernated" else 200  # waking page / the session's answer

    def wakes(self) -> bool:
        """Whether the request must start waking the hibernated session."""
        expected = self.expect()
        return self.target == "hibernated" and expected in (ACCEPT, 503)


PROXY_CELLS = [
    ProxyCell(kind, target, credential, who)
    for kind, target in (
        ("GET", "running"),
        ("POST", "running"),
        ("WS", "running"),
        ("GET", "hibernated"),
        ("WS", "hibernated"),
    )
    for who in PRINCIPALS
    for credential in (PERSON_CREDENTIALS if who in PEOPLE else (OWN_CREDENTIAL[who],))
]


def _people_only(allowed: Expectation, refused: Expectation = REFUSE) -> dict[str, Expectation]:
    return {who: allowed if who in PEOPLE else refused for who in PRINCIPALS}


def _other_agent_only(allowed: Expectation) -> dict[str, Expectation]:
    return {who: allowed if who == OTHER_AGENT else REFUSE for who in PRINCIPALS}


# Rows of the portal socket and the agent endpoints: principal -> expectation.
SOCKET_ROWS: dict[SocketRow, dict[str, Expectation]] = {
    SocketRow(PORTAL_WS, "WS /ws/portal/ connect"): _people_only(ACCEPT),
    SocketRow(PORTAL_WS, "WS /ws/portal/ session.get {running}"): {
        **_people_only(SESSION_UPDATE),
        BOB: NOT_FOUND_FRAME,
    },
    SocketRow(PORTAL_WS, "WS /ws/portal/ from another origin"): dict.fromkeys(PRINCIPALS, REFUSE),
    SocketRow(AGENT_SOCKET, "WS /api/v1/agents/connect"): _other_agent_only(ACCEPT),
    # Another agent's token registers only as that agent ...
    SocketRow(AGENT_SOCKET, "WS /api/v1/agents/connect register as the session's agent"): _other_agent_only(
        "agent_mismatch"
    ),
    # ... and cannot speak for the sessions or commands of the agent that runs them.
    SocketRow(AGENT_SOCKET, "WS /api/v1/agents/connect session_status of alice's session"): _other_agent_only(
        "unknown_session"
    ),
    SocketRow(AGENT_SOCKET, "WS /api/v1/agents/connect result of the session agent's command"): _other_agent_only(
        "unknown_command"
    ),
    SocketRow(TUNNEL, "WS /api/v1/agents/tunnel/{pending stream of the session agent}"): dict.fromkeys(
        PRINCIPALS, REFUSE
    ),
    SocketRow(TUNNEL, "WS /api/v1/agents/tunnel/{unknown stream}"): dict.fromkeys(PRINCIPALS, REFUSE),
}
ROUTES_WITH_ROWS = {row.route for row in SOCKET_ROWS} | {cell.route for cell in PROXY_CELLS}

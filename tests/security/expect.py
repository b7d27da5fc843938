"""What a cell of the matrix expects, the principals' roles, and the cells still pending.

A cell is (surface, row, principal). Its expectation is an HTTP status (``int``), a
redirect (:class:`Redirect`, e.g. :data:`LOGIN`), or for a WebSocket :data:`ACCEPT` /
:data:`REFUSE`. :data:`PENDING` lists the cells written to the behaviour issue 15 asks for
that another change delivers; they run as strict xfails, so the change that makes one pass
must remove its entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.security.world import (
    ADMIN,
    ALICE,
    BOB,
    CAROL,
    OPERATOR,
    READ_TOKEN,
    WRITE_TOKEN,
)
from tests.support.api_matrix import ADMIN as ROLE_ADMIN
from tests.support.api_matrix import OPERATOR as ROLE_OPERATOR
from tests.support.api_matrix import ROLE_RANK
from tests.support.api_matrix import USER as ROLE_USER


@dataclass(frozen=True)
class Redirect:
    """A 302 to ``path`` (the query string aside), or to anything under it with ``prefix``."""

    path: str
    prefix: bool = False

    def matches(self, location: str) -> bool:
        target = location.partition("?")[0]
        return target.startswith(self.path) if self.prefix else target == self.path

    def __str__(self) -> str:
        return f"302 to {self.path}{'…' if self.prefix else ''}"


LOGIN = Redirect("/accounts/login/")
ACCEPT = "accept"  # the WebSocket handshake is accepted
REFUSE = "refuse"  # the WebSocket handshake is refused (closed before accept: HTTP 403)

Expectation = int | Redirect | str

# The role each principal acts with once authenticated (API tokens without the admin scope
# act with user rights, docs/roles.md); the anonymous caller and the agent have none.
ROLE_OF = {
    ALICE: ROLE_USER,
    BOB: ROLE_USER,
    CAROL: ROLE_USER,
    OPERATOR: ROLE_OPERATOR,
    ADMIN: ROLE_ADMIN,
    READ_TOKEN: ROLE_USER,
    WRITE_TOKEN: ROLE_USER,
}


def has_role(principal: str, least: str) -> bool:
    role = ROLE_OF.get(principal)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[least]


# --- cells written to the intended behaviour (issue 15), strict xfail until it lands -----
ITEM_1 = "issue 15 item 1, lands with origins"  # the portal's login cookie is no proxy credential

PROXY_PORTAL_COOKIE_ROWS = tuple(
    f"{kind} /api/v1/http/{{{target}}}/ portal-cookie"
    for kind, target in (
        ("GET", "running"),
        ("POST", "running"),
        ("WS", "running"),
        ("GET", "hibernated"),
        ("WS", "hibernated"),
    )
)

PENDING: dict[tuple[str, str, str], str] = {
    # The cookie stops being a proxy credential: over HTTP bob's 403 becomes a 401 as well; a
    # WebSocket he opens is refused either way.
    **{
        ("proxy", row, who): ITEM_1
        for row in PROXY_PORTAL_COOKIE_ROWS
        for who in (ALICE, BOB, CAROL, OPERATOR, ADMIN)
        if not (row.startswith("WS ") and who == BOB)
        # A share recipient's socket to a hibernated session is refused already: she may not wake it.
        and not (row == "WS /api/v1/http/{hibernated}/ portal-cookie" and who == CAROL)
    },
}


def marks_for(surface: str, row: str, principal: str) -> list[pytest.MarkDecorator]:
    reason = PENDING.get((surface, row, principal))
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


def cell_id(row: str, principal: str) -> str:
    return f"{row} | {principal}"

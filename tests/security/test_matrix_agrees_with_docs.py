"""The matrix and docs/roles.md say the same: least roles of the API and the portal pages,
what API tokens may not do, who views and who manages a session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.api_cells import API_ROWS, NO_API_TOKEN, NOT_FOUND_FOR, NOT_READ_SCOPE, VIEW_SESSION
from tests.security.page_cells import PAGES
from tests.security.socket_cells import MANAGERS, VIEWERS, ProxyCell
from tests.security.world import ADMIN, ALICE, ANONYMOUS, BOB, CAROL, OPERATOR, PEOPLE, READ_TOKEN, WRITE_TOKEN
from tests.support.api_matrix import ANY

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "roles.md"
ROLES = ("any", "user", "operator", "admin")
# The principal who stands for each role when the least role is read off the cells.
STAND_IN = {"any": ANONYMOUS, "user": ALICE, "operator": OPERATOR, "admin": ADMIN}
SESSION_COLUMNS = {"owner": ALICE, "share recipient": CAROL, "other user": BOB, "operator": OPERATOR, "admin": ADMIN}


def tables_under(heading: str) -> list[list[list[str]]]:
    """The tables of the section ``heading``: their rows' cells (header and separator dropped)."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*lines[lines.index(heading) + 1 :], "## end"]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if current:
            tables.append(current[2:])
            current = []
        if line.startswith("## "):
            return tables
    return tables


def table_after(heading: str, index: int = 0) -> list[list[str]]:
    return tables_under(heading)[index]


def least_documented(marks: list[str]) -> str:
    return next(role for role, mark in zip(ROLES, marks, strict=True) if mark == "✓")


def least_in_cells(expect: object) -> str:
    """The least role whose stand-in passes the role check (an object rule's 404 passes it)."""
    return next(role for role in ROLES if expect(STAND_IN[role]) not in (401, 403))  # type: ignore[operator]


def test_api_least_roles_agree():
    documented = {row[0].strip("`"): least_documented(row[1:]) for row in table_after("## API")}
    for row in API_ROWS:
        assert documented[row.key] == least_in_cells(row.expect), row.key


def test_portal_page_least_roles_agree():
    documented = {row[0].strip("`"): least_documented(row[1:]) for row in table_after("## Portal pages")}
    portal = [p for p in PAGES if p.pattern in documented]
    assert {p.pattern for p in portal} == set(documented)  # every documented page is a row
    for page in portal:
        least = "any" if page.least == ANY else page.least
        assert documented[page.pattern] == least, page.key
    undocumented = {
        p.pattern for p in PAGES if p.pattern.startswith(("/ops/", "/sessions/", "/launch/", "/accounts/security/"))
    }
    assert undocumented <= set(documented)


def test_api_token_refusals_agree():
    refused = {row[1].strip("`"): row[0] for row in table_after("## API tokens", 1)}  # after the scope table
    assert {key for key, who in refused.items() if who == "read tokens"} == NOT_READ_SCOPE
    assert {key for key, who in refused.items() if who == "every API token"} == NO_API_TOKEN
    for row in API_ROWS:
        if row.key in refused or row.endpoint.role in (ANY, "operator", "admin"):
            continue
        # Elsewhere a token acts as its owner: read tokens on safe methods, write tokens on all.
        assert row.expect(WRITE_TOKEN) == row.expect(ALICE), row.key
        assert row.expect(READ_TOKEN) == (row.expect(ALICE) if row.safe else 403), row.key


@pytest.mark.parametrize("right", ["view", "manage"])
def test_who_views_and_manages_a_session_agrees(right: str):
    rows = {row[0].split(":")[0]: row[1:] for row in table_after("## Sessions: who views, who manages")}
    allowed = {who for who, mark in zip(SESSION_COLUMNS.values(), rows[right], strict=True) if mark == "✓"}
    api_rows = [row for row in API_ROWS if row.key in NOT_FOUND_FOR and "/sessions/" in row.key]
    for row in api_rows:
        if (row.key in VIEW_SESSION) == (right == "view"):
            assert {who for who in PEOPLE if row.expect(who) != 404} == allowed, row.key
    assert (VIEWERS if right == "view" else MANAGERS) == allowed
    # The proxy: who is let in (view), who wakes a hibernated session by opening it (manage).
    for who in PEOPLE:
        cell = ProxyCell("GET", "running" if right == "view" else "hibernated", "viewer-cookie", who)
        assert (cell.expect() in (200, 503)) == (who in allowed)


def test_roles_doc_links_the_threat_model():
    assert "docs/security.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(security.md)" in DOC.read_text(encoding="utf-8")

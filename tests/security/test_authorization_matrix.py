"""The authorization matrix over HTTP: every REST API endpoint and every portal page ×
every principal, plus the checks that no route is left without a row.

Rows come from the URL configuration (``tests/security/routes.py``); expectations from
``tests/security/api_cells.py`` (the rules of ``docs/roles.md`` over ``tests/api_matrix.py``)
and ``tests/security/page_cells.py``. Sockets and the session proxy are in
``test_socket_matrix.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient
from rest_framework.views import APIView

from tests.security.api_cells import API_ROWS, ApiRow
from tests.security.expect import Expectation, Redirect, cell_id, marks_for
from tests.security.page_cells import ADMIN_SUBTREE, PAGES, Page, pages_by_pattern
from tests.security.routes import Route, as_template, http_routes, proxy_mounts, websocket_routes
from tests.security.socket_cells import ROUTES_WITH_ROWS
from tests.security.world import ADMIN, ALICE, ANONYMOUS, PRINCIPALS, World

pytestmark = pytest.mark.django_db

CSRF = "matrixcsrftokenmatrixcsrftoken12"  # 32 characters: a valid unmasked CSRF secret
PAGES_BY_PATTERN = pages_by_pattern(PAGES)


def assert_answer(response: Any, expected: Expectation) -> None:
    body = response.content[:300]
    if isinstance(expected, Redirect):
        assert response.status_code == 302, body
        assert expected.matches(response["Location"]), response["Location"]
    else:
        assert response.status_code == expected, body


# --- every route has a row, every row a route ---------------------------------------------
def routes_without_rows(routes: list[Route]) -> list[str]:
    """``METHOD pattern`` of each API route method, and the pattern of each other route, that
    the matrix has no row for (the admin's model pages aside: test_admin_roles.py)."""
    api_keys = {row.key for row in API_ROWS}
    missing = []
    for route in routes:
        if route.pattern.startswith(ADMIN_SUBTREE):
            continue
        methods = route.drf_methods
        if route.pattern.startswith("/api/v1/") and methods is not None:
            missing += [
                f"{m.upper()} {route.pattern}"
                for m in methods
                if f"{m.upper()} {as_template(route.pattern)}" not in api_keys
            ]
        elif route.pattern not in PAGES_BY_PATTERN:
            missing.append(route.pattern)
    return missing


def test_every_http_route_has_rows():
    assert routes_without_rows(http_routes()) == [], "add rows: tests/api_matrix.py or tests/security/page_cells.py"


def test_a_route_without_a_row_is_listed():
    class NewView(APIView):
        def get(self, request: Any) -> None: ...

        def delete(self, request: Any) -> None: ...

    new = [
        Route("/api/v1/sessions/<uuid:session_id>/snapshots", NewView.as_view()),
        Route("/ops/new-page/", lambda request: None),
        Route("/admin/sessions_app/session/", lambda request: None),
    ]
    assert routes_without_rows(http_routes() + new) == [
        "DELETE /api/v1/sessions/<uuid:session_id>/snapshots",
        "GET /api/v1/sessions/<uuid:session_id>/snapshots",
        "/ops/new-page/",
    ]


def test_every_row_names_a_route():
    patterns = {route.pattern for route in http_routes()}
    templates = {as_template(p) for p in patterns if p.startswith("/api/v1/")}
    stale = [row.key for row in API_ROWS if row.endpoint.path not in templates]
    stale += [page.key for page in PAGES if page.pattern not in patterns]
    assert stale == []


def test_every_socket_route_and_proxy_mount_has_rows():
    assert sorted(set(websocket_routes()) | set(proxy_mounts())) == sorted(ROUTES_WITH_ROWS)


def test_admin_entry_points_are_rows():
    admin_routes = {r.pattern for r in http_routes() if r.pattern.startswith(ADMIN_SUBTREE)}
    assert {"/admin/", "/admin/login/", "/admin/logout/"} <= admin_routes
    assert {"/admin/", "/admin/login/", "/admin/logout/"} <= set(PAGES_BY_PATTERN)


# --- the REST API -----------------------------------------------------------------------
def api_client(world: World, principal: str) -> APIClient:
    client = APIClient()
    authorization = world.credentials[principal].authorization
    if authorization:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    return client


API_CELLS = [
    pytest.param(row, who, id=cell_id(row.key, who), marks=marks_for("api", row.key, who))
    for row in API_ROWS
    for who in PRINCIPALS
]


@pytest.mark.parametrize(("row", "who"), API_CELLS)
def test_api(row: ApiRow, who: str, cell: World):
    response = getattr(api_client(cell, who), row.endpoint.method)(row.path(cell), row.body(cell, who), format="json")
    expected = row.expect(who)
    assert_answer(response, expected)
    changed = row.changed(cell, who)
    if changed is not None:
        assert changed == (200 <= expected < 300)


UNSAFE_API_ROWS = [row for row in API_ROWS if not row.safe and row.endpoint.role != "any"]


def allowed_person(expect: Any, ok: Any = None) -> str:
    """alice, or the admin where alice is refused: someone the row lets through."""
    return next(
        who for who in (ALICE, ADMIN) if (expect(who) == ok if ok is not None else expect(who) not in (401, 403))
    )


@pytest.mark.parametrize("row", UNSAFE_API_ROWS, ids=lambda row: row.key)
def test_api_refuses_the_portal_cookie_without_csrf_token(row: ApiRow, cell: World):
    """A page on another origin that makes a browser send its portal cookie cannot change
    anything: a request that changes state needs the CSRF token as well."""
    who = allowed_person(row.expect)
    client = APIClient(enforce_csrf_checks=True)
    client.cookies["sessionid"] = cell.credentials[who].portal_cookie
    response = getattr(client, row.endpoint.method)(row.path(cell), row.body(cell, who), format="json")
    assert response.status_code == 403, response.content[:300]
    assert "CSRF" in response.json()["detail"]
    assert row.changed(cell, who) in (None, False)


# --- portal pages -----------------------------------------------------------------------
def page_request(page: Page, world: World, principal: str, *, method: str | None = None) -> Any:
    credential = world.credentials[principal]
    client = Client(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = CSRF
    if credential.portal_cookie:
        client.cookies["sessionid"] = credential.portal_cookie
    headers = {"HTTP_X_CSRFTOKEN": CSRF}
    if credential.authorization:
        headers["HTTP_AUTHORIZATION"] = credential.authorization
    if page.json:
        headers["HTTP_ACCEPT"] = "application/json"
    data = page.data(world, principal) if page.data else {}
    verb = (method or page.method).lower()
    if verb == "get":
        return client.get(page.path(world), **headers)
    if verb == "post":
        return client.post(page.path(world), data, **headers)
    return getattr(client, verb)(page.path(world), **headers)


PAGE_CELLS = [
    pytest.param(page, who, id=cell_id(page.key, who), marks=marks_for("page", page.key, who))
    for page in PAGES
    for who in PRINCIPALS
]


@pytest.mark.parametrize(("page", "who"), PAGE_CELLS)
def test_page(page: Page, who: str, cell: World):
    response = page_request(page, cell, who)
    assert_answer(response, page.expect(who))
    if page.effect is not None:
        assert page.effect(cell, who) == page.changes_for(who)


OTHER_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.mark.parametrize("pattern", sorted(PAGES_BY_PATTERN), ids=str)
def test_no_method_skips_the_sign_in(pattern: str, cell: World):
    """Methods a route has no row for answer 405 or 404, or what the route answers a caller
    without a portal sign-in for its first row: no method reaches a page unauthenticated."""
    rows = PAGES_BY_PATTERN[pattern]
    listed = {page.method for page in rows}
    first = rows[0]
    for method in OTHER_METHODS:
        if method in listed:
            continue
        response = page_request(first, cell, ANONYMOUS, method=method)
        if response.status_code not in (404, 405):
            assert_answer(response, first.anon)


@pytest.mark.parametrize("page", [p for p in PAGES if p.method == "POST" and not p.csrf_exempt], ids=lambda p: p.key)
def test_page_post_needs_the_csrf_token(page: Page, cell: World):
    """The same POST as an allowed person's cell, without the CSRF token: refused, no change."""
    who = allowed_person(page.expect, page.ok)
    client = Client(enforce_csrf_checks=True)
    client.cookies["sessionid"] = cell.credentials[who].portal_cookie
    response = client.post(page.path(cell), page.data(cell, who) if page.data else {})
    assert response.status_code == 403, response.content[:300]
    assert b"CSRF" in response.content
    if page.effect is not None:
        assert not page.effect(cell, who)

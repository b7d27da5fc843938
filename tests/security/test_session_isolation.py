"""A session's web content never runs with the portal's authority (issue 15, item 1).

A session owner (mallory) serves a hostile page from a local session; an admin opens the
session in the portal's viewer, in Chromium, against the real stack (daphne + a local agent).
The page tries (a) the portal's API with the admin's cookies (list users, create an admin API
token: with a readable request, and with no-cors posts after tossing a CSRF cookie to the
parent domain), the portal's socket and the session's content on the portal's origin; (b) to
read the portal's cookies and CSRF token; (c) to script the portal page that frames it. All
fail: the page's own report says so, and the server agrees (no token was created, no portal
cookie reached the session's server). The normal viewer still works: the demo canvas in the
portal's iframe, its WebSocket included.

Two deployment shapes: ``make run``'s default (the portal at ``localhost``, sessions at
``<id>.localhost``: two sites, no DNS) and a wildcard domain (``streamspace.example.com`` and
``<id>.sessions.example.com``: one site, so the portal's ``SameSite=Lax`` cookies do reach
requests from a session's page and the other defences must hold). Chromium maps
``*.example.com`` to the loopback; it resolves ``*.localhost`` there by itself.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.db import connection

from sessions_app.models import Session, SessionState, Template
from streamspace.accounts.models import ApiToken
from streamspace.audit.models import AuditEvent
from tests.support.browser import TIMEOUT_MS, chromium, demo_round_trip, make_person, sign_in
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import stop
from tests.support.stack import Stack, make_agent, stack_env
from tests.support.waits import wait_until

HOSTILE_APP = Path(__file__).with_name("hostile_app.py")
SHAPES = {
    # name: (portal host, session domain)
    "make-run": ("localhost", "localhost"),
    "wildcard-domain": ("streamspace.example.com", "sessions.example.com"),
}
PORTAL_COOKIES = ("sessionid", "csrftoken", "streamspace_viewer")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium("--host-resolver-rules=MAP *.example.com 127.0.0.1") as instance:
        yield instance


@pytest.fixture(params=list(SHAPES))
def deployment(request, tmp_path) -> Iterator[tuple[Stack, str, str]]:
    """The stack in one deployment shape, the portal's origin as browsers reach it, the session domain."""
    portal_host, domain = SHAPES[request.param]
    running = Stack(env=stack_env(connection, tmp_path), data_dir=tmp_path)
    running.env.update(ALLOWED_HOSTS=f"{portal_host},127.0.0.1", STREAMSPACE_SESSION_DOMAIN=domain)
    running.start_control_plane()
    yield running, f"http://{portal_host}:{running.port}", domain
    running.stop()
    print(running.dump_logs())  # shown when the test failed


def launch(stack: Stack, user, template: str) -> str:
    """Launch through the API as ``user`` (signed in with the password); the session id once it runs."""
    login = httpx.post(
        f"{stack.base}/api/v1/auth/login", json={"username": user.username, "password": f"pw-{user.username}"}
    )
    assert login.status_code == 200, login.text
    reply = httpx.post(
        f"{stack.base}/api/v1/sessions",
        json={"template": template, "persistent_home": False},
        headers={"Authorization": f"Bearer {login.json()['access']}"},
        timeout=30,
    )
    assert reply.status_code == 202, reply.text
    session_id = reply.json()["id"]
    wait_until(
        lambda: Session.objects.filter(pk=session_id, state=SessionState.RUNNING, streaming_ready=True).exists(),
        timeout=60,
        what=f"{template} running",
    )
    return session_id


def frame_of(page):
    return page.locator("iframe[data-frame]").element_handle().content_frame()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_hostile_session_page_cannot_act_as_its_viewer(browser, deployment, tmp_path):
    stack, portal, domain = deployment
    requests_log = tmp_path / "hostile-requests.jsonl"
    mallory = make_person("mallory")
    admin = make_person("root", role="admin")
    agent, token = make_agent("local-isolation", "local")
    Template.objects.create(
        slug="hostile",
        display_name="Innocent desktop",
        platform="local",
        command=["{python}", str(HOSTILE_APP), "--port", "{port}", "--portal", portal, "--log", str(requests_log)],
        default_cpu_millicores=100,
        default_memory_mb=64,
    )
    Template.objects.create(
        slug="demo-canvas",
        display_name="Demo canvas",
        platform="local",
        command=["{python}", "-m", "agent_runtime.demo_app", "--port", "{port}", "--home", "{home}"],
        default_cpu_millicores=100,
        default_memory_mb=64,
    )
    stack.start_agent(agent, token, "local-isolation-a")
    wait_until(lambda: agent.instances.filter(connected=True, is_leader=True).exists(), what="the agent")
    hostile = launch(stack, mallory, "hostile")

    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    sign_in(page, portal, "root", "pw-root")
    viewer_url = f"{portal}/sessions/{hostile}/view"
    page.goto(viewer_url)
    report_text = frame_of(page).locator("#report").filter(has_text="attempts").text_content()
    report = json.loads(report_text)
    attempts = report["attempts"]

    # (a) Nothing the page asked of the portal came back readable, nor opened.
    for name in (
        "list users",
        "my tokens",
        "create token (json)",
        "list users (xhr)",
        "portal page (csrf token)",
        "session content on the portal's origin",
        "portal socket",
    ):
        assert attempts[name]["ok"] is False, (name, attempts[name])
    # A relative URL on the session's origin reaches the session's own server, not the portal.
    assert "session's own server" in attempts["list users (relative)"]["detail"]
    # (b) No portal cookie is visible to the page (the viewer cookie is HttpOnly, the portal's
    # cookies belong to the portal's host alone).
    assert report["cookies"] == "", report["cookies"]
    # (c) The portal page is out of reach, and stays where it was.
    for name in ("parent DOM", "parent csrf token", "parent cookies", "top location"):
        assert attempts[name]["ok"] is False and "SecurityError" in attempts[name]["detail"], (name, attempts[name])
    assert page.url == viewer_url

    # What the page could not read it cannot leak either: none of the admin's secrets appear.
    csrf = page.locator("[data-viewer] input[name=csrfmiddlewaretoken]").first.get_attribute("value")
    portal_cookies = {c["name"]: c["value"] for c in context.cookies() if c["name"] in PORTAL_COOKIES}
    assert portal_cookies.get("sessionid") and csrf
    for secret in [csrf, *portal_cookies.values()]:
        assert secret not in report_text
    assert "root@example.com" not in report_text and "mallory@example.com" not in report_text

    # The server agrees: no token was created, none was attempted with the admin's rights, and
    # no portal or viewer cookie ever reached the session's server.
    assert not ApiToken.objects.exists()
    assert not AuditEvent.objects.filter(action="token.created").exists()
    seen = [json.loads(line) for line in requests_log.read_text().splitlines()]
    assert any(entry["path"] == "/api/v1/users" for entry in seen)  # the relative request, to itself
    for entry in seen:
        names = {pair.split("=", 1)[0].strip() for pair in entry["cookie"].split(";") if pair.strip()}
        assert not names & set(PORTAL_COOKIES), entry
        assert csrf not in entry["cookie"] and portal_cookies["sessionid"] not in entry["cookie"]

    # The session ran on an origin of its own.
    frame_src = page.locator("iframe[data-frame]").get_attribute("src")
    session_origin = re.match(r"^(https?://[^/]+)/", frame_src or "")
    assert session_origin and session_origin.group(1) == f"http://{hostile}.{domain}:{stack.port}", frame_src

    # The normal viewer still works: the demo canvas in the portal's iframe, over its WebSocket.
    demo = launch(stack, admin, "demo-canvas")
    page.goto(f"{portal}/sessions/{demo}/view")
    canvas = page.frame_locator("iframe[data-frame]")
    canvas.get_by_role("heading", name="Demo canvas").wait_for()
    demo_round_trip(page, canvas)
    page.locator(".viewer__overlay").wait_for(state="hidden")
    assert frame_of(page).url.startswith(session_origin.group(1).replace(hostile, demo))
    context.close()


def test_the_hostile_app_serves_its_page_and_logs_requests(tmp_path):
    """The attack page is served as the browser test expects, and every request is logged."""
    port = free_port()
    log = tmp_path / "log.jsonl"
    process = subprocess.Popen(
        [sys.executable, str(HOSTILE_APP), "--port", str(port), "--portal", "http://portal.test", "--log", str(log)]
    )
    try:
        wait_for_port(port, process)
        page = httpx.get(f"http://127.0.0.1:{port}/", headers={"Cookie": "a=1"})
        assert page.status_code == 200 and 'const PORTAL = "http://portal.test";' in page.text
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/users").status_code == 404
        assert [json.loads(line)["cookie"] for line in log.read_text().splitlines()] == ["a=1", ""]
    finally:
        stop(process)

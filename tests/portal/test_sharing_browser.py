"""Sharing in a real browser against the served stack (docs/architecture.md §22).

alice shares her session with bob from the viewer's Share dialog: as a viewer bob sees the
picture and his typing does not reach the session; as a collaborator it does; alice sees him
under "Connected now". A link alice creates opens the session for someone signed out, and
stops at once when she revokes it, the open WebSocket included.

The session is ``tests/support/typing_session.py`` (a page that shows frames pushed over a
WebSocket and sends every key typed on it): an image without a view-only credential, so the
proxy is what keeps a viewer's keys away.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from sessions_app.models import Share, Template
from tests.support import ROOT
from tests.support.browser import TIMEOUT_MS, chromium, make_person, sign_in
from tests.support.factories import make_session
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import stop
from tests.support.stack import Stack, one_site_stack
from tests.support.waits import wait_until

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]

# One site for the portal and the sessions (``<id>.streamspace.localhost``), as `make run` serves them.
PORTAL_HOST = SESSION_DOMAIN = "streamspace.localhost"
DESKTOP = {"width": 1280, "height": 860}


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as instance:
        yield instance


@pytest.fixture(scope="module")
def typing_port() -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.support.typing_session", "--port", str(port)], cwd=ROOT)
    try:
        wait_for_port(port, process)
        yield port
    finally:
        stop(process)


@pytest.fixture
def stack(request, tmp_path) -> Iterator[Stack]:
    yield from one_site_stack(request, tmp_path, SESSION_DOMAIN)


@pytest.fixture
def session(typing_port):
    alice = make_person("alice")
    make_person("bob")
    template = Template.objects.create(slug="typing", display_name="Typing", image="registry.local/typing:1")
    return make_session(alice, template, None, endpoint=f"127.0.0.1:{typing_port}", streaming_ready=True)


def typed(port: int) -> list[str]:
    return httpx.get(f"http://127.0.0.1:{port}/typed", timeout=5).json()


def portal(stack: Stack) -> str:
    return f"http://{PORTAL_HOST}:{stack.port}"


def signed_in(browser, stack: Stack, username: str):
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    sign_in(page, portal(stack), username, f"pw-{username}")
    return context, page


def session_frame(page, session_id: str):
    """The viewer's frame once it shows the session's page with its socket open."""
    page.locator("iframe[data-frame]").wait_for()

    def find():
        return next((frame for frame in page.main_frame.child_frames if session_id in frame.url), None)

    # Frame URLs change only as Playwright processes the browser's events, inside its own calls.
    frame = find()
    if frame is None:
        page.wait_for_event("framenavigated", predicate=lambda navigated: session_id in navigated.url, timeout=30_000)
        frame = find()
    assert frame is not None, [frame.url for frame in page.main_frame.child_frames]
    frame.locator("#socket").filter(has_text="open").wait_for()
    frame.locator("#picture").filter(has_text=re.compile(r"^frame \d+$")).wait_for()  # the picture moves
    return frame


def type_into(page, frame, text: str) -> None:
    frame.locator("body").click()
    page.keyboard.type(text, delay=20)


def open_share_dialog(page):
    page.get_by_role("button", name="Share").click()
    dialog = page.locator("[data-share-dialog]")
    dialog.wait_for()
    return dialog


def share_with(dialog, username: str, role: str) -> None:
    form = dialog.locator("[data-share-grant]")
    form.locator("select[name=kind]").select_option("user")
    form.locator("input[name=name]").fill(username)
    form.locator("select[name=role]").select_option(role)
    form.get_by_role("button", name="Share").click()
    dialog.locator("[data-share-rows] tr", has_text=username).filter(has_text=role).wait_for()


def test_a_viewer_sees_the_picture_and_only_a_collaborator_types(browser, stack, session, typing_port):
    session_id = str(session.pk)
    alice_context, alice = signed_in(browser, stack, "alice")
    bob_context, bob = signed_in(browser, stack, "bob")
    try:
        alice.goto(f"{portal(stack)}/sessions/{session_id}/view")
        alice_frame = session_frame(alice, session_id)
        dialog = open_share_dialog(alice)
        share_with(dialog, "bob", "viewer")

        bob.goto(f"{portal(stack)}/sessions/")
        card = bob.locator(f'[data-shared-session-id="{session_id}"]')
        assert card.get_attribute("data-role") == "viewer" and "View only" in card.inner_text()
        card.get_by_role("link", name="Open").click()
        bob.locator("[data-view-only]").wait_for()
        bob_frame = session_frame(bob, session_id)
        dialog.locator('[data-connected="bob"]').filter(has_text="viewer").wait_for()  # alice sees him

        dialog.locator("[data-share-close]").click()

        type_into(bob, bob_frame, "qwe")
        type_into(alice, alice_frame, "z")  # the owner's key arrives; bob's, typed first, never do
        wait_until(lambda: "z" in typed(typing_port), 10, what="alice's key in the session")
        assert not {"q", "w", "e"} & set(typed(typing_port))
        assert re.fullmatch(r"frame \d+", bob_frame.locator("#picture").inner_text())

        dialog = open_share_dialog(alice)
        share_with(dialog, "bob", "collaborator")
        bob.reload()
        bob.locator("[data-shared-by]").wait_for()
        bob_frame = session_frame(bob, session_id)
        type_into(bob, bob_frame, "xyz")
        wait_until(
            lambda: {"x", "y", "z"} <= set(typed(typing_port)) and "y" in typed(typing_port), 10, what="bob's keys"
        )
        assert not {"q", "w", "e"} & set(typed(typing_port))
    finally:
        alice_context.close()
        bob_context.close()


def test_a_revoked_link_stops_at_once_with_its_open_socket(browser, stack, session):
    session_id = str(session.pk)
    alice_context, alice = signed_in(browser, stack, "alice")
    guest_context = browser.new_context(viewport=DESKTOP)  # signed out: the link is all it has
    guest_context.set_default_timeout(TIMEOUT_MS)
    try:
        alice.goto(f"{portal(stack)}/sessions/{session_id}/view")
        dialog = open_share_dialog(alice)
        form = dialog.locator("[data-share-link]")
        form.locator("select[name=role]").select_option("viewer")
        form.get_by_role("button", name="Create link").click()
        url_box = dialog.locator("[data-share-link-url]")
        url_box.wait_for()
        link = url_box.input_value()
        assert link.startswith(f"http://{session_id}.{SESSION_DOMAIN}:{stack.port}/?share=")

        guest = guest_context.new_page()
        guest.goto(link)
        assert guest.url == f"http://{session_id}.{SESSION_DOMAIN}:{stack.port}/"  # the key is gone from the bar
        guest.locator("#socket").filter(has_text="open").wait_for()
        guest.locator("#picture").filter(has_text=re.compile(r"^frame \d+$")).wait_for()
        dialog.locator('[data-connected="link"]').wait_for()

        share_id = Share.objects.get(session=session, link_digest__isnull=False).pk
        dialog.locator(f'[data-revoke="{share_id}"]').click()
        guest.locator("#socket").filter(has_text="closed 4403").wait_for(timeout=5_000)
        frozen = guest.locator("#picture").inner_text()
        assert not Share.objects.filter(pk=share_id).exists()
        answer = guest.reload()
        assert answer is not None and answer.status == 403
        assert frozen.startswith("frame ")
    finally:
        alice_context.close()
        guest_context.close()

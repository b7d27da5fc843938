"""The local backend's Xvfb + Selkies desktop streamed end to end, in a real browser.

alice launches "Linux desktop (Selkies)" on a local agent and watches it through the proxy
(the portal's viewer, the session on its own origin, Selkies' WebSocket transport: no other
service). A program inside the session paints the display's root window and Chromium's
screenshot of the stream shows those colours; text typed in the browser reaches the
session's terminal (the command it types writes a file in the session's home); the file
survives hibernate → wake, and the woken desktop streams again. bob, signed in too, cannot
open alice's session: the portal answers 404, the session's origin 401, the proxy 403 for his
credential. Selkies itself asks for the session's stream secret, which only the proxy presents.

Needs the desktop's packages, xdotool and xsetroot (scripts/ensure-desktop-deps.sh);
in CI their absence is a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command

from agent_runtime import desktop
from sessions_app.models import Session, SessionState
from tests.portal.test_browser_journey import DESKTOP, make_person, shoot, sign_in
from tests.portal.test_desktop_browser import offers_desktop, session_frame, wait_for_live_surface
from tests.support.browser import chromium
from tests.support.ci import unavailable
from tests.support.desktop import colour_share, display_file, missing_x_tools, on_display, paint_root
from tests.support.stack import Stack, make_agent, one_site_stack
from tests.support.waits import wait_until

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]

PORTAL_HOST = "streamspace.localhost"  # sessions at <id>.streamspace.localhost, one site
MAGENTA, GREEN, ORANGE = "#ff00ff", "#00c000", "#ff8000"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as instance:
        yield instance


@pytest.fixture
def stack(request, tmp_path) -> Iterator[Stack]:
    yield from one_site_stack(request, tmp_path, PORTAL_HOST)


def session_display(stack: Stack, session_id: str) -> str:
    """The woken or started desktop's X display, from the file it writes in the session's home."""
    found: list[Path] = []

    def written() -> bool:
        path = display_file(stack.data_dir, session_id)
        if path is not None and path.read_text().strip():
            found[:] = [path]
            return True
        return False

    wait_until(written, 30, what="the desktop's display file", logs=stack.logs)
    return found[0].read_text().strip()


def shows(viewer, colour: str, share: float = 0.05) -> bool:
    return colour_share(viewer.screenshot(), colour) >= share


def wait_for_colours(viewer, display: str) -> None:
    """Paint the root window magenta, then green: the stream shows each, and after the switch it shows no magenta."""
    paint_root(display, MAGENTA)
    wait_until(lambda: shows(viewer, MAGENTA), 60, what="the magenta root window in the stream")
    paint_root(display, GREEN)
    wait_until(
        lambda: shows(viewer, GREEN) and colour_share(viewer.screenshot(), MAGENTA) < 0.001,
        60,
        what="the green root window replacing the magenta one",
    )


def type_into_terminal(page, viewer, display: str, home_file: Path, text: str) -> None:
    """Put the terminal under the viewer's centre, click it from the browser and type a command
    that writes ``text`` into ``home_file`` (typed again if the session's page reloaded under
    the keystrokes: the command is idempotent)."""
    window = on_display(display, "xdotool", "search", "--sync", "--class", "xterm").split()[0]
    geometry = on_display(display, "xdotool", "getdisplaygeometry").split()
    width, height = int(geometry[0]), int(geometry[1])
    on_display(display, "xdotool", "windowmove", window, str(width // 4), str(height // 4))
    box = viewer.bounding_box()
    for attempt in range(3):
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.keyboard.type(f"echo {text} > ~/{home_file.name}", delay=20)
        page.keyboard.press("Enter")
        try:
            wait_until(lambda: home_file.exists() and home_file.read_text().strip() == text, 20, what=str(home_file))
            return
        except TimeoutError:
            if attempt == 2:
                raise


def api(stack: Stack, username: str, method: str, path: str) -> httpx.Response:
    """An API client of ``username`` (signed in with its password: the stack has its own key)."""
    host = {"Host": f"{PORTAL_HOST}:{stack.port}"}
    login = httpx.post(
        f"{stack.base}/api/v1/auth/login", json={"username": username, "password": f"pw-{username}"}, headers=host
    )
    headers = {**host, "Authorization": f"Bearer {login.json()['access']}"}
    return httpx.request(method, f"{stack.base}{path}", headers=headers, timeout=30)


def test_alice_streams_the_local_desktop_and_bob_cannot(browser, stack):
    missing = desktop.missing_dependencies() + missing_x_tools()
    if missing:
        unavailable(f"the desktop test needs {', '.join(missing)}: run scripts/ensure-desktop-deps.sh")
    call_command("seed_demo", "--no-admin")
    make_person("alice"), make_person("bob")
    agent, token = make_agent("local", "local")
    stack.start_agent(agent, token, "local-a")
    wait_until(lambda: offers_desktop(agent), what="the local agent offering desktops", logs=stack.logs)
    portal = f"http://{PORTAL_HOST}:{stack.port}"

    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        sign_in(page, portal, "alice", "pw-alice")
        page.get_by_role("button", name="Launch Linux desktop (Selkies)").click()
        page.locator("[data-viewer][data-state=running]").wait_for()
        session_id = page.locator("[data-viewer]").get_attribute("data-session-id")
        page.locator(".viewer__overlay").wait_for(state="hidden")
        wait_for_live_surface(session_frame(page, session_id))
        viewer = page.locator("iframe[data-frame]")
        display = session_display(stack, session_id)

        # Selkies asks for the session's stream secret, which only the proxy presents: the
        # stream is the proxy's alone, and the viewer never saw a second login.
        row = Session.objects.get(pk=session_id)
        assert row.stream_secret and row.stream_view_secret
        assert httpx.get(f"http://{row.endpoint}/", timeout=10).status_code == 401

        # A program in the session draws; the browser's picture of the stream has its pixels.
        wait_for_colours(viewer, display)
        shoot(page, "desktop-stream-colours")

        # Typed in the browser, run by the session's terminal: the file is in the session's home.
        home = display_file(stack.data_dir, session_id).parent.parent
        typed = home / "typed.txt"
        type_into_terminal(page, viewer, display, typed, "typed-in-the-browser")

        # Hibernate → wake: the desktop stops (its display file goes with it), the home stays,
        # and the woken desktop (a new display) streams again.
        page.locator("[data-viewer] [data-action=hibernate] button").click()
        page.locator("[data-viewer][data-state=hibernated]").wait_for()
        wait_until(lambda: display_file(stack.data_dir, session_id) is None, 30, what="the desktop stopped")
        assert typed.read_text().strip() == "typed-in-the-browser"
        page.locator("[data-reconnect]").click()
        page.locator("[data-viewer][data-state=running]").wait_for()
        page.locator(".viewer__overlay").wait_for(state="hidden")
        woken = session_display(stack, session_id)
        assert typed.read_text().strip() == "typed-in-the-browser"
        wait_for_live_surface(session_frame(page, session_id))
        paint_root(woken, ORANGE)
        wait_until(lambda: shows(viewer, ORANGE), 60, what="the woken desktop's orange root in the stream")
        shoot(page, "desktop-stream-woken")
        assert Session.objects.get(pk=session_id).state == SessionState.RUNNING
    finally:
        context.close()

    # bob, signed in, cannot reach alice's session by any of its URLs.
    intruder = browser.new_context(viewport=DESKTOP)
    intruder.set_default_timeout(TIMEOUT_MS)
    try:
        bob_page = intruder.new_page()
        sign_in(bob_page, portal, "bob", "pw-bob")
        assert bob_page.goto(f"{portal}/sessions/{session_id}/view").status == 404  # ids cannot be probed
        origin = bob_page.goto(f"http://{session_id}.{PORTAL_HOST}:{stack.port}/")
        assert origin.status == 401 and bob_page.locator("canvas, video").count() == 0
    finally:
        intruder.close()
    assert api(stack, "bob", "GET", f"/api/v1/http/{session_id}/").status_code == 403
    assert api(stack, "bob", "GET", f"/api/v1/sessions/{session_id}/viewer-url").status_code == 404
    assert api(stack, "alice", "GET", f"/api/v1/http/{session_id}/").status_code == 200

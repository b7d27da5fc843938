"""What `make run` promises, in a real browser against a real stack: sign in as the admin,
launch the demo catalog's "Linux desktop (Selkies)" on a local agent, see the terminal in the
viewer and type into it; templates whose platform has no agent are shown unavailable with
their reason and no Launch button.

The desktop needs Xvfb, a window manager, a terminal and selkies on this host
(scripts/ensure-desktop-deps.sh, run by `make services`); in CI their absence is a failure.
With ``UPDATE_DOCS_SCREENSHOTS=1`` the viewer screenshot is also written to
docs/screenshots/linux-desktop.png (the README's picture).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command

from agent_runtime import desktop
from agent_runtime.protocol import FEATURE_DESKTOP
from sessions_app.models import Session, SessionState
from tests.portal.test_browser_journey import DESKTOP, make_person, shoot, sign_in
from tests.support import ROOT
from tests.support.browser import chromium
from tests.support.ci import unavailable
from tests.support.stack import Stack, make_agent, one_site_stack
from tests.support.waits import wait_until

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]

DOCS_SCREENSHOT = ROOT / "docs" / "screenshots" / "linux-desktop.png"
# `make run`'s shape: the portal at ``streamspace.localhost`` and each session at
# ``<id>.streamspace.localhost``, one site (so the Selkies client keeps its localStorage in
# browsers that block third-party storage, as this Chromium does) and a secure context (the
# client refuses plain HTTP elsewhere); browsers resolve ``*.localhost`` to the loopback.
PORTAL_HOST = SESSION_DOMAIN = "streamspace.localhost"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as instance:
        yield instance


@pytest.fixture
def stack(request, tmp_path) -> Iterator[Stack]:
    yield from one_site_stack(request, tmp_path, SESSION_DOMAIN)


DESKTOP_TIMEOUT_MS = 60_000


def session_frame(page, session_id: str):
    """The viewer's frame showing the session (the one place that knows where the viewer puts
    a session: the page's child frame whose URL names the session id, on whatever origin)."""
    page.locator("iframe[data-frame]").wait_for()

    def find():
        return next((frame for frame in page.main_frame.child_frames if session_id in frame.url), None)

    # Frame URLs change only as Playwright processes the browser's events, which it does
    # inside its own calls: wait for the navigation rather than polling a stale property.
    frame = find()
    if frame is None:
        page.wait_for_event("framenavigated", predicate=lambda navigated: session_id in navigated.url, timeout=30_000)
        frame = find()
    assert frame is not None, [frame.url for frame in page.main_frame.child_frames]
    return frame


def wait_for_live_surface(frame) -> None:
    """Until selkies draws the desktop on a canvas or video element with a size."""
    # Measured in one evaluation: selkies replaces its canvases while it starts, so a list of
    # elements taken first may hold one that is gone by the time it is measured.
    widest = """() => Math.max(0, ...[...document.querySelectorAll('canvas, video')]
        .filter(e => e.checkVisibility()).map(e => e.getBoundingClientRect().width))"""
    from playwright.sync_api import Error as PlaywrightError

    def drawn() -> bool:
        try:
            return frame.evaluate(widest) > 100
        except PlaywrightError:  # the frame navigated (the viewer URL's redirect): measure again
            return False

    wait_until(drawn, 60, what="a drawn canvas or video")


def offers_desktop(agent) -> bool:
    leader = agent.instances.filter(connected=True, is_leader=True).first()
    return leader is not None and FEATURE_DESKTOP in (leader.capacity.get("features") or [])


def distinct_colours(png: bytes) -> int:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    return len(image.getcolors(maxcolors=1 << 24) or [])


def bright_pixels(png: bytes) -> int:
    """Pixels near white: the terminal's background (the X root and the page around are dark)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L")
    return sum(count for value, count in enumerate(image.histogram()) if value >= 230)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="streamspace-desktop-test-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_admin_launches_the_linux_desktop_and_types_into_its_terminal(browser, stack, shared_dir):
    missing = desktop.missing_dependencies()
    if missing:
        unavailable(f"the desktop needs {', '.join(missing)}: run scripts/ensure-desktop-deps.sh")
    call_command("seed_demo", "--no-admin")  # the catalog `make run` loads
    make_person("admin", role="admin")
    agent, token = make_agent("local", "local")
    stack.start_agent(agent, token, "local-a")
    wait_until(lambda: offers_desktop(agent), what="the local agent offering desktops", logs=stack.logs)

    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(DESKTOP_TIMEOUT_MS)
    page = context.new_page()
    try:
        sign_in(page, f"http://{PORTAL_HOST}:{stack.port}", "admin", "pw-admin")
        page.get_by_role("heading", name="Catalog").wait_for()

        # No docker or kubernetes agent: the image templates are there, unavailable, with the reason.
        for slug in ("desktop", "terminal", "firefox", "libreoffice"):
            card = page.locator(f'[data-template="{slug}"]')
            assert card.get_attribute("data-available") == "false"
            assert card.locator('[data-unavailable="no_agent"]').inner_text().startswith("Unavailable")
            assert "No agent is registered for docker or kubernetes" in card.inner_text()
            assert card.get_by_role("button").count() == 0
        assert page.locator('[data-template="linux-desktop-selkies"]').get_attribute("data-available") == "true"
        shoot(page, "catalog-make-run")

        page.get_by_role("button", name="Launch Linux desktop (Selkies)").click()
        page.locator("[data-viewer][data-state=running]").wait_for()
        session_id = page.locator("[data-viewer]").get_attribute("data-session-id")
        assert Session.objects.get(pk=session_id).state == SessionState.RUNNING
        page.locator(".viewer__overlay").wait_for(state="hidden")
        wait_for_live_surface(session_frame(page, session_id))
        # Pixels are read from the viewer's iframe element: the session's own page may swap
        # its canvas or reload (a fresh viewer URL) while the element stays.
        viewer = page.locator("iframe[data-frame]")

        # The terminal is on screen: the stream shows more than a blank display.
        wait_until(lambda: bright_pixels(viewer.screenshot()) > 10_000, 60, what="the terminal on screen")
        assert distinct_colours(viewer.screenshot()) > 2

        # Typed text reaches the terminal: a command it runs writes a file on this host (in a
        # directory any user may write: the session may run as another user than the test).
        # Typed again if the session's page reloaded under the keystrokes (idempotent).
        marker = shared_dir / "typed"
        box = viewer.bounding_box()
        for attempt in range(3):
            before = viewer.screenshot()
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.keyboard.type(f"echo MARKER > {marker}", delay=20)
            wait_until(lambda before=before: viewer.screenshot() != before, 30, what="the typed text on screen")
            page.keyboard.press("Enter")
            try:
                wait_until(lambda: marker.exists() and marker.read_text().strip() == "MARKER", 15, what=str(marker))
                break
            except TimeoutError:
                if attempt == 2:
                    raise
        shoot(page, "viewer-linux-desktop")
        if os.environ.get("UPDATE_DOCS_SCREENSHOTS"):
            page.keyboard.type("clear; echo Hello from a StreamSpace session; uname -sr", delay=20)
            page.keyboard.press("Enter")
            page.wait_for_timeout(1500)  # a picture for people: let the stream settle
            page.screenshot(path=str(DOCS_SCREENSHOT))

        page.locator("[data-viewer] [data-action=stop] button").click()
        wait_until(lambda: Session.objects.get(pk=session_id).state == SessionState.STOPPED, 30, what="stopped")
    finally:
        context.close()

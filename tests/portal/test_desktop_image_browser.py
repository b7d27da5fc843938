"""The shipped desktop image streamed end to end, every part real: daphne on PostgreSQL, a
``streamspace-agent`` with the Docker backend on the real engine running
``ghcr.io/streamspace-dev/desktop`` (built with no registry by ``scripts/build-images.sh``,
which ``make services`` runs), Debian's Chromium driven by Playwright in `make run`'s shape
(the portal at ``streamspace.localhost``, the session on its own origin).

Alice launches the catalog's "Debian desktop"; selkies in the container refuses a request
that bypasses the proxy (the per-session stream secret); a program inside it paints the X
root window a known colour and the browser's picture of the stream shows it; text typed in
the browser runs in the session's terminal (read back from inside the container); the file
it wrote in her home survives hibernate and wake; Bob's viewer URL for her session is refused
with 403. With ``UPDATE_DOCS_SCREENSHOTS=1`` the viewer is also saved as
docs/screenshots/docker-desktop.png (the README's picture).
"""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.core.management import call_command

from agent_runtime.images import HOME_PATH, shipped_image
from sessions_app.models import Session, SessionState
from sessions_app.viewer import viewer_url
from tests.portal.test_browser_journey import DESKTOP
from tests.portal.test_desktop_browser import session_frame, wait_for_live_surface
from tests.support import ROOT
from tests.support.browser import chromium, make_person, shoot, sign_in
from tests.support.ci import unavailable
from tests.support.stack import Stack, make_agent, one_site_stack
from tests.support.waits import wait_until

pytestmark = [
    pytest.mark.docker,
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]

IMAGE = shipped_image("desktop")
DOCS_SCREENSHOT = ROOT / "docs" / "screenshots" / "docker-desktop.png"
PORTAL_HOST = SESSION_DOMAIN = "streamspace.localhost"
MAGENTA = (255, 0, 255)
TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def desktop_image(docker_client: Any) -> str:
    """The desktop image, built (or found up to date) by the script ``make images`` runs."""
    build = subprocess.run(
        [str(ROOT / "scripts/build-images.sh"), "desktop"], capture_output=True, text=True, timeout=3600
    )
    if build.returncode != 0:
        unavailable(f"building {IMAGE} failed (scripts/build-images.sh desktop):\n{build.stdout}\n{build.stderr}")
    return IMAGE


@pytest.fixture
def images_agent_id(docker_client: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """The Docker agent's id; its containers and the test users' home volumes are removed after."""
    agent_id = f"images-{secrets.token_hex(4)}"
    yield agent_id
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for container in docker_client.containers.list(all=True, filters={"label": f"streamspace.managed-by={agent_id}"}):
        if failed:
            sys.stderr.write(f"--- logs of {container.name} ({container.status})\n")
            sys.stderr.write(container.logs(tail=200).decode(errors="replace"))
        container.remove(force=True)
    for volume in docker_client.volumes.list(filters={"label": f"streamspace.managed-by={agent_id}"}):
        volume.remove(force=True)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as instance:
        yield instance


@pytest.fixture
def stack(request, tmp_path, settings) -> Iterator[Stack]:
    # The test signs a viewer URL itself: the same key and session domain as the stack.
    settings.STREAMSPACE_SESSION_DOMAIN = SESSION_DOMAIN
    yield from one_site_stack(request, tmp_path, SESSION_DOMAIN, SECRET_KEY=settings.SECRET_KEY)


def in_session(docker_client: Any, session_id: str, command: str) -> str:
    """Run ``command`` (sh) in the session's container as its user, on its display; its output."""
    container = docker_client.containers.get(f"streamspace-{session_id}")
    result = container.exec_run(["sh", "-c", command], user="1000", environment={"DISPLAY": ":0"})
    assert result.exit_code == 0, result.output.decode(errors="replace")
    return result.output.decode(errors="replace")


def terminal_centre(docker_client: Any, session_id: str, box: dict[str, float]) -> tuple[float, float]:
    """Where the middle of the session's terminal window is on the page, from the display's
    own geometry (selkies sizes the display to the viewer, so the two scale linearly)."""
    numbers = in_session(
        docker_client,
        session_id,
        "xdotool getdisplaygeometry; xdotool search --onlyvisible --class xterm getwindowgeometry --shell | "
        "grep -E '^(X|Y|WIDTH|HEIGHT)=' | cut -d= -f2",
    ).split()
    display_w, display_h, x, y, w, h = (int(n) for n in numbers[:6])
    return (
        box["x"] + (x + w / 2) * box["width"] / display_w,
        box["y"] + (y + min(h, display_h - y) / 2) * box["height"] / display_h,
    )


def share_of(png: bytes, colour: tuple[int, int, int], tolerance: int = 40) -> float:
    """The share of the picture's pixels within ``tolerance`` of ``colour`` on every channel
    (the stream is video-coded: colours arrive close, not exact)."""
    from PIL import Image

    pixels = list(Image.open(io.BytesIO(png)).convert("RGB").get_flattened_data())
    near = sum(1 for pixel in pixels if all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True)))
    return near / len(pixels)


def state_of(session_id: str) -> str:
    return Session.objects.get(pk=session_id).state


def open_viewer(page, session_id: str):
    """Wait until the viewer shows the running session's live picture; its iframe element."""
    page.locator("[data-viewer][data-state=running]").wait_for()
    page.locator(".viewer__overlay").wait_for(state="hidden")
    wait_for_live_surface(session_frame(page, session_id))
    return page.locator("iframe[data-frame]")


@pytest.mark.timeout(900)  # includes building the image when `make services` has not
def test_alice_streams_the_desktop_image_and_bob_is_refused(
    browser, stack, desktop_image, images_agent_id, docker_client
):
    call_command("seed_demo", "--no-admin")  # the catalog `make run` loads
    alice = make_person("alice-images")
    bob = make_person("bob-images")
    agent, token = make_agent(images_agent_id, "docker")
    stack.start_agent(agent, token, f"{images_agent_id}-a", pull="never", stop_timeout="5")
    wait_until(lambda: agent.instances.filter(connected=True, is_leader=True).exists(), what="the Docker agent")

    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    portal = f"http://{PORTAL_HOST}:{stack.port}"
    try:
        sign_in(page, portal, "alice-images", "pw-alice-images")
        page.get_by_role("heading", name="Catalog").wait_for()
        card = page.locator('[data-template="desktop"]')
        assert card.get_attribute("data-available") == "true", card.inner_text()
        page.get_by_role("button", name="Launch Debian desktop").click()
        page.locator("[data-viewer]").wait_for()
        session_id = page.locator("[data-viewer]").get_attribute("data-session-id")
        session = Session.objects.get(pk=session_id)
        assert session.template.image == desktop_image and session.user == alice
        viewer = open_viewer(page, session_id)

        # Only the proxy can use the stream: selkies in the container wants the session's secret.
        session.refresh_from_db()
        assert session.stream_secret and session.endpoint
        assert httpx.get(f"http://{session.endpoint}/", timeout=10).status_code == 401

        # A program inside the session paints the X root window; the browser's picture shows it.
        assert share_of(viewer.screenshot(), MAGENTA) < 0.01
        in_session(docker_client, session_id, "xsetroot -solid '#ff00ff'")
        wait_until(lambda: share_of(viewer.screenshot(), MAGENTA) > 0.2, 60, what="the magenta root window")

        # Typed text reaches the terminal, which runs it as the session's user, in its home.
        # The click lands in the terminal's window (where the display has it) to focus it.
        marker = f"typed-{secrets.token_hex(3)}"
        for attempt in range(3):
            x, y = terminal_centre(docker_client, session_id, viewer.bounding_box())
            before = viewer.screenshot()
            page.mouse.click(x, y)
            page.keyboard.type(f"echo {marker} > ~/typed", delay=20)
            wait_until(lambda before=before: viewer.screenshot() != before, 30, what="the typed text on screen")
            page.keyboard.press("Enter")
            try:
                wait_until(
                    lambda: in_session(docker_client, session_id, "cat ~/typed 2>/dev/null || true").strip() == marker,
                    15,
                    what="~/typed written by the terminal",
                )
                break
            except TimeoutError:
                if attempt == 2:
                    raise
        assert in_session(docker_client, session_id, "id -u; echo $HOME").split() == ["1000", HOME_PATH]
        shoot(page, "viewer-docker-desktop")
        if os.environ.get("UPDATE_DOCS_SCREENSHOTS"):
            in_session(docker_client, session_id, "xsetroot -solid '#2e3440'")
            page.keyboard.type(
                "clear; echo Hello from a StreamSpace desktop container; cat /etc/debian_version", delay=20
            )
            page.keyboard.press("Enter")
            page.wait_for_timeout(1500)  # a picture for people: let the stream settle
            page.screenshot(path=str(DOCS_SCREENSHOT))

        # Bob's viewer URL for Alice's session is refused by the session's origin.
        bob_context = browser.new_context(viewport=DESKTOP)
        try:
            bob_page = bob_context.new_page()
            sign_in(bob_page, portal, "bob-images", "pw-bob-images")
            url = viewer_url(session_id, bob.pk, scheme="http", host=f"{PORTAL_HOST}:{stack.port}")
            assert bob_page.goto(url).status == 403
        finally:
            bob_context.close()

        # The home survives hibernate and wake.
        page.locator("[data-viewer] [data-action=hibernate] button").click()
        wait_until(lambda: state_of(session_id) == SessionState.HIBERNATED, 60, what="hibernated")
        assert docker_client.containers.get(f"streamspace-{session_id}").status == "exited"
        page.goto(f"{portal}/sessions/{session_id}/view")  # opening a hibernated session wakes it
        open_viewer(page, session_id)
        assert in_session(docker_client, session_id, "cat ~/typed").strip() == marker

        page.locator("[data-viewer] [data-action=stop] button").click()
        wait_until(lambda: state_of(session_id) == SessionState.STOPPED, 60, what="stopped")
    finally:
        context.close()

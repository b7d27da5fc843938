"""A failed launch says why, in a real browser: Chromium launches a local template whose
command writes a marker to stderr and exits 3; the session's page follows the agent's steps
live, turns to "failed" within seconds and shows the exit code and the marker (read from the
logs API by the page's script)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from sessions_app.models import Session, SessionState, Template
from tests.portal.test_browser_journey import DESKTOP, TIMEOUT_MS, browser, make_person, shoot, sign_in
from tests.support.stack import Stack, make_agent, running_stack
from tests.support.waits import wait_until

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]
__all__ = ["browser"]  # the module-scoped Chromium fixture, shared with the journey

MARKER = "MARKER-browser-b7"


@pytest.fixture
def stack(request, tmp_path) -> Iterator[Stack]:
    yield from running_stack(request, tmp_path)


def test_a_failed_launch_shows_its_exit_code_and_output(browser, stack):
    alice = make_person("alice")
    Template.objects.create(
        slug="broken-desktop",
        display_name="Broken desktop",
        platform="local",
        command=["sh", "-c", f"echo {MARKER} Xvfb: cannot open display >&2; echo password=hunter2; exit 3"],
    )
    agent, token = make_agent("local-browser", "local")
    stack.start_agent(agent, token, "local-browser-a")
    wait_until(lambda: agent.instances.filter(connected=True, is_leader=True).exists(), what="the agent leader")

    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    sign_in(page, stack.base, "alice", "pw-alice")
    clicked = time.monotonic()
    page.get_by_role("button", name="Launch Broken desktop").click()
    page.wait_for_url(re.compile(r"/sessions/[0-9a-f-]{36}/$"))
    failure = page.locator("[data-failure]")
    failure.wait_for(state="visible")
    assert time.monotonic() - clicked < 10
    session = Session.objects.get(user=alice)
    assert session.state == SessionState.FAILED and session.exit_code == 3

    assert "exited with code 3" in page.locator("[data-failure-reason]").inner_text()
    assert page.locator("[data-exit-code]").inner_text() == "3"
    tail = page.locator("[data-log-tail]")
    tail.filter(has_text=MARKER).wait_for()  # the page's script read it from the logs API
    assert "hunter2" not in tail.inner_text() and "[REDACTED]" in tail.inner_text()
    failed_step = page.locator("[data-agent-steps] li.is-failed")
    assert failed_step.count() == 1 and "exited with code 3" in failed_step.inner_text()
    assert page.locator("[data-steps]").is_hidden()  # the agent's steps replace the states
    assert page.locator("[data-cancel]").is_hidden()
    shoot(page, "launch-failed-with-output")
    context.close()

"""The portal in a real browser against a real stack (daphne + agents), with screenshots.

Chromium is Debian's (/usr/bin/chromium, installed by scripts/ensure-browser.sh), driven by
Playwright. The stack shares the test's PostgreSQL database and Redis db, so the test checks
the browser's effects in the database directly.

User journey: sign in with password + TOTP → catalog → launch the demo template on a local
agent (two replicas, one leader) → live progress → viewer: the session's own page on its own
origin through the proxy and a WebSocket round trip inside it → hibernate → wake → stop. Operator journey:
the agents page shows the leader and the follower; the audit page shows what the user did.
A second test does the same launch on a real Docker agent with the test image.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.utils import timezone

from agent_runtime.backends.docker_objects import home_volume_name
from sessions_app.models import Session, SessionState, Template
from tests.support.browser import TIMEOUT_MS, chromium, demo_round_trip, make_person, shoot, sign_in
from tests.support.stack import Stack, make_agent, running_stack
from tests.support.waits import wait_until

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]

DESKTOP = {"width": 1366, "height": 860}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as instance:
        yield instance


@pytest.fixture
def stack(request, tmp_path, settings) -> Iterator[Stack]:
    yield from running_stack(request, tmp_path)


def session_state(session_id) -> str:
    return Session.objects.values_list("state", flat=True).get(pk=session_id)


def session_origin(stack: Stack, session_id: str) -> str:
    """Where the portal's viewer loads a session: its own origin (``*.localhost`` resolves to
    the loopback in Chromium), never the portal's."""
    return f"http://{session_id}.localhost:{stack.port}"


def websocket_echo(page, stack: Stack, session_id: str) -> str:
    """Open a WebSocket from inside the session's iframe (through the proxy) and echo a line."""
    inner = next(f for f in page.frames if f.url.startswith(session_origin(stack, session_id) + "/"))
    script = """() => new Promise((resolve, reject) => {
         const url = location.href.split('?')[0].replace(/^http/, 'ws');
         const ws = new WebSocket(url);
         const timer = setTimeout(() => { ws.close(); reject(new Error('no echo within 10 s')); }, 10000);
         ws.onopen = () => ws.send('hello through the proxy');
         ws.onmessage = (event) => { clearTimeout(timer); resolve(event.data.trim()); ws.close(); };
         ws.onerror = () => { clearTimeout(timer); reject(new Error('websocket failed')); };
       })"""
    # A session that just woke may answer HTTP a moment before its WebSocket server accepts.
    for attempt in range(3):
        try:
            return inner.evaluate(script)
        except Exception:
            if attempt == 2:
                raise
            page.wait_for_timeout(1000)
    raise AssertionError("unreachable")


def test_user_and_operator_journey_on_a_local_agent(browser, stack, tmp_path):
    from streamspace.accounts import mfa

    alice = make_person("alice")
    device = mfa.begin_totp(alice)
    device.confirmed = True
    device.save()
    make_person("root", role="admin")
    agent, token = make_agent("local-e2e", "local")
    Template.objects.create(
        slug="demo-canvas",
        display_name="Demo canvas",
        description="A tiny built-in session app: HTTP page, WebSocket echo and a shared canvas.",
        category="Demo",
        icon="🎨",
        platform="local",
        command=["{python}", "-m", "agent_runtime.demo_app", "--port", "{port}", "--home", "{home}"],
        default_cpu_millicores=250,
        default_memory_mb=128,
    )
    for slug, name, icon, category in [
        ("firefox", "Firefox", "🦊", "Browsers"),
        ("vscode", "VS Code", "🧑‍💻", "Development"),
        ("webtop-xfce", "Ubuntu XFCE desktop", "🐧", "Desktops"),
    ]:
        Template.objects.create(
            slug=slug,
            display_name=name,
            icon=icon,
            category=category,
            image=f"registry.local/{slug}:1",
            description=f"{name} in an isolated container, streamed to your browser.",
        )
    lock = tmp_path / "local-e2e.lock"
    stack.start_agent(agent, token, "local-e2e-a", ha_lock=lock)
    wait_until(lambda: agent.instances.filter(connected=True, is_leader=True).exists(), what="leader")
    stack.start_agent(agent, token, "local-e2e-b", ha_lock=lock)
    wait_until(lambda: agent.instances.filter(connected=True).count() == 2, what="follower")

    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    sign_in(page, stack.base, "alice", "pw-alice", user=alice, shots=True)

    # Catalog: cards, quota, client-side filter.
    page.get_by_role("heading", name="Catalog").wait_for()
    assert page.locator("[data-template]").count() == 4
    shoot(page, "catalog")
    page.get_by_label("Search").fill("canvas")
    assert page.locator("[data-template]:visible").count() == 1
    page.get_by_role("button", name="Launch Demo canvas").click()

    # Live progress, then the viewer opens by itself (the progress page may flash by).
    page.locator("[data-viewer]").wait_for()
    session_id = page.locator("[data-viewer]").get_attribute("data-session-id")
    assert session_state(session_id) == SessionState.RUNNING
    frame = page.frame_locator("iframe[data-frame]")
    frame.get_by_role("heading", name="Demo canvas").wait_for()
    src = page.locator("iframe[data-frame]").get_attribute("src")
    assert src.startswith(f"{session_origin(stack, session_id)}/?token=")
    inner = page.locator("iframe[data-frame]").element_handle().content_frame()
    assert inner.url == session_origin(stack, session_id) + "/"  # the token exchanged, then dropped
    demo_round_trip(page, frame)
    page.locator(".viewer__overlay").wait_for(state="hidden")
    shoot(page, "viewer")

    # Hibernate from the toolbar: the reconnect screen offers to wake it.
    page.locator("[data-viewer] [data-action=hibernate] button").click()
    page.locator("[data-viewer][data-state=hibernated]").wait_for()
    assert page.locator("[data-overlay-title]").inner_text() == "Hibernated"
    assert page.locator("[data-viewer] [data-action=hibernate]").is_hidden()
    shoot(page, "viewer-hibernated")
    page.locator("[data-reconnect]").click()
    page.locator("[data-viewer][data-state=running]").wait_for()
    page.locator(".viewer__overlay").wait_for(state="hidden")
    demo_round_trip(page, frame)

    # My sessions: live state, then stop.
    page.get_by_role("link", name="Back").click()
    page.wait_for_url(stack.base + "/sessions/")
    card = page.locator(f'[data-session-id="{session_id}"]')
    card.locator("[data-state-badge]").filter(has_text="running").wait_for()
    shoot(page, "sessions")
    card.get_by_role("button", name="Stop").click()
    card.locator("[data-state-badge]").filter(has_text=re.compile("stopping|stopped")).wait_for()
    wait_until(lambda: session_state(session_id) == SessionState.STOPPED, what="stopped")
    card.locator("[data-state-badge]").filter(has_text="stopped").wait_for()

    # A failed launch explains why and what to do.
    failed = Session.objects.create(
        name="Firefox",
        user=alice,
        template=Template.objects.get(slug="firefox"),
        state=SessionState.FAILED,
        platform="docker",
        cpu_millicores=1000,
        memory_mb=1024,
        idle_timeout_s=600,
        status_message="Image registry.local/firefox:1 is not present on this Docker host.",
        last_activity=timezone.now(),
        state_changed_at=timezone.now(),
    )
    page.goto(f"{stack.base}/sessions/{failed.pk}/")
    page.locator("[data-failure]").wait_for()
    assert "is not present on this Docker host" in page.locator("[data-failure-reason]").inner_text()
    assert page.locator("[data-failure]").get_by_role("link", name="Back to the catalog").is_visible()
    assert page.locator("[data-cancel]").is_hidden()
    shoot(page, "launch-failed")

    # Phone width: the main user pages.
    phone = browser.new_context(viewport=PHONE, storage_state=context.storage_state())
    phone_page = phone.new_page()
    for path, name in [("/", "catalog"), ("/sessions/?history=1", "sessions")]:
        phone_page.goto(stack.base + path)
        shoot(phone_page, name)
    phone.close()
    context.close()

    # Operator journey.
    ops = browser.new_context(viewport=DESKTOP)
    ops.set_default_timeout(TIMEOUT_MS)
    ops_page = ops.new_page()
    sign_in(ops_page, stack.base, "root", "pw-root")
    ops_page.goto(stack.base + "/ops/agents/")
    assert ops_page.locator('[data-instance="local-e2e-a"][data-role="leader"][data-connected="true"]').count() == 1
    assert ops_page.locator('[data-instance="local-e2e-b"][data-role="follower"][data-connected="true"]').count() == 1
    shoot(ops_page, "ops-agents")
    ops_page.goto(stack.base + "/ops/audit/?actor=alice")
    for action in ("session.create", "session.hibernate", "session.wake", "session.stop"):
        assert ops_page.locator(f'[data-audit-action="{action}"]').count() >= 1, action
    shoot(ops_page, "ops-audit")
    for path, name in [
        ("/ops/", "ops-overview"),
        ("/ops/sessions/", "ops-sessions"),
        ("/ops/users/", "ops-users"),
        ("/ops/templates/", "ops-templates"),
        ("/ops/templates/demo-canvas", "ops-template-edit"),
        ("/ops/plugins/", "ops-plugins"),
    ]:
        ops_page.goto(stack.base + path)
        assert ops_page.locator("main h1").count() == 1
        shoot(ops_page, name)
    ops_phone = browser.new_context(viewport=PHONE, storage_state=ops.storage_state())
    phone_page = ops_phone.new_page()
    for path, name in [("/ops/agents/", "ops-agents"), ("/ops/audit/", "ops-audit")]:
        phone_page.goto(stack.base + path)
        shoot(phone_page, name)
    ops_phone.close()
    ops.close()


@pytest.mark.docker
def test_launch_the_test_image_on_a_docker_agent(browser, stack, docker_client, docker_agent_id):
    username = f"dora-{docker_agent_id}"  # unique: the home volume is per user
    make_person(username)
    agent, token = make_agent(docker_agent_id, "docker")
    Template.objects.create(
        slug="test-session",
        display_name="Test session",
        description="websocketd serving a page and a WebSocket echo.",
        category="Test",
        icon="🧪",
        image="streamspace-test-session:latest",
        platform="docker",
        streaming_port=8080,
        default_cpu_millicores=250,
        default_memory_mb=128,
    )
    stack.start_agent(agent, token, f"{docker_agent_id}-0", pull="never")
    wait_until(lambda: agent.instances.filter(connected=True, is_leader=True).exists(), what="docker agent")
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(60_000)
    page = context.new_page()
    try:
        sign_in(page, stack.base, username, f"pw-{username}")
        page.get_by_role("button", name="Launch Test session").click()
        page.locator("[data-viewer]").wait_for()
        session_id = page.locator("[data-viewer]").get_attribute("data-session-id")
        page.frame_locator("iframe[data-frame]").get_by_role("heading", name="streamspace test session").wait_for()
        assert websocket_echo(page, stack, session_id) == "hello through the proxy"
        shoot(page, "viewer-docker")
        page.locator("[data-viewer] [data-action=hibernate] button").click()
        page.locator("[data-viewer][data-state=hibernated]").wait_for()
        page.locator("[data-reconnect]").click()
        page.locator("[data-viewer][data-state=running]").wait_for()
        page.locator(".viewer__overlay").wait_for(state="hidden")
        page.frame_locator("iframe[data-frame]").get_by_role("heading", name="streamspace test session").wait_for()
        assert websocket_echo(page, stack, session_id) == "hello through the proxy"
        page.locator("[data-viewer] [data-action=stop] button").click()
        wait_until(lambda: session_state(session_id) == SessionState.STOPPED, timeout=60, what="stopped")
    finally:
        context.close()
        home = home_volume_name(username)
        wait_until(lambda: not docker_client.containers.list(all=True, filters={"volume": home}), 30, what="cleanup")
        for volume in docker_client.volumes.list(filters={"name": home}):
            volume.remove(force=True)

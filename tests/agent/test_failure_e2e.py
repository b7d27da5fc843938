"""A failed launch says why, with every part real: daphne on the test's PostgreSQL database,
a ``streamspace-agent`` process (local, or Docker on the real engine), sessions launched
through the API. A workload that writes a marker to stderr and exits non-zero, or that is
killed from outside once it streams, ends ``failed`` within seconds; its exit code and the
marker are on the session's page and in its logs API.

The control plane asks agents for a heartbeat only every 60 s here, so the agent's
periodic check cannot be what notices: the exit itself is.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
from django.test import Client
from rest_framework_simplejwt.tokens import RefreshToken

from agent_runtime.images import shipped_image
from sessions_app.models import Session, SessionState, Template
from tests.support.docker import TEST_IMAGE
from tests.support.stack import (
    Stack,
    make_agent,
    running_stack,
    wait_for_other_connections_to_close,
)
from tests.support.waits import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WITHIN_S = 5.0
MARKER = "MARKER-e2e-5f3a"
CRASH = ["sh", "-c", f"echo starting up; echo {MARKER} cannot open display >&2; echo AGENT_TOKEN=leaked-1234; exit 3"]


@pytest.fixture
def stack(request, tmp_path, settings) -> Iterator[Stack]:
    # The test signs access tokens and portal cookies with the stack's key.
    yield from running_stack(request, tmp_path, SECRET_KEY=settings.SECRET_KEY, AGENT_HEARTBEAT_INTERVAL_S="60")
    wait_for_other_connections_to_close()


@pytest.fixture
def api(stack, alice) -> Iterator[httpx.Client]:
    token = RefreshToken.for_user(alice).access_token
    with httpx.Client(base_url=stack.base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        yield client


def portal_page(stack: Stack, user, session_id: str) -> str:
    """The session's page as the user's browser gets it from daphne (a real portal cookie)."""
    browser = Client()
    browser.force_login(user)
    cookie = browser.cookies["sessionid"].value
    page = httpx.get(f"{stack.base}/sessions/{session_id}/", cookies={"sessionid": cookie}, timeout=30)
    assert page.status_code == 200, page.text
    return page.text


def start_agent(stack: Stack, platform: str, agent_id: str, **options: str):
    agent, token = make_agent(agent_id, platform)
    stack.start_agent(agent, token, f"{agent_id}-a", **options)
    wait_until(lambda: agent.instances.filter(connected=True, is_leader=True).exists(), what="the agent leader")
    return agent


def launch(api: httpx.Client, slug: str) -> str:
    response = api.post("/api/v1/sessions", json={"template": slug, "persistent_home": False})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def failed_within(session_id: str, since: float, timeout: float = WITHIN_S) -> Session:
    session = wait_until(
        lambda: Session.objects.filter(pk=session_id, state=SessionState.FAILED).first(),
        timeout=timeout + 10,  # a slow failure fails the assertion below, with its time
        interval=0.05,
        what=f"session {session_id} failed",
    )
    elapsed = time.monotonic() - since
    assert elapsed < timeout, f"failed after {elapsed:.1f} s"
    return session


def check_logs_and_page(stack: Stack, api: httpx.Client, alice, session_id: str, exit_code: int) -> dict:
    logs = api.get(f"/api/v1/sessions/{session_id}/logs")
    assert logs.status_code == 200, logs.text
    body = logs.json()
    assert body["state"] == "failed" and body["exit_code"] == exit_code
    page = portal_page(stack, alice, session_id)
    assert f"<code data-exit-code>{exit_code}</code>" in page
    assert body["status_message"].replace("'", "&#x27;") in page
    return body


def test_a_local_command_that_exits_at_once_fails_with_its_marker(stack, api, alice):
    Template.objects.create(slug="crashes", display_name="Crashes", platform="local", command=CRASH)
    start_agent(stack, "local", "local-crash")
    began = time.monotonic()
    session_id = launch(api, "crashes")
    session = failed_within(session_id, began)
    assert session.exit_code == 3
    assert session.status_message == "The process exited with code 3 before the session was ready."
    body = check_logs_and_page(stack, api, alice, session_id, 3)
    assert f"{MARKER} cannot open display" in body["log_tail"] and "leaked-1234" not in body["log_tail"]
    # The process may die before or after the agent saw it start: the step it died in is failed,
    # whatever came before it is done.
    steps = [(s["step"], s["state"]) for s in body["progress"]]
    assert steps in ([("workload", "failed")], [("workload", "done"), ("stream", "failed")]), steps
    assert MARKER in portal_page(stack, alice, session_id)


def test_a_local_session_killed_after_it_streams_fails_with_the_signal(stack, api, alice):
    Template.objects.create(
        slug="serves",
        display_name="Serves",
        platform="local",
        command=["{python}", "-m", "agent_runtime.demo_app", "--port", "{port}", "--home", "{home}"],
    )
    start_agent(stack, "local", "local-kill")
    session_id = launch(api, "serves")
    wait_until(
        lambda: Session.objects.filter(pk=session_id, state=SessionState.RUNNING, streaming_ready=True).exists(),
        what="the session streams",
    )
    steps = [(s["step"], s["state"]) for s in api.get(f"/api/v1/sessions/{session_id}").json()["progress"]]
    assert steps == [("workload", "done"), ("stream", "done"), ("ready", "done")]
    state = json.loads((stack.data_dir / "agent-local-kill-a" / "local-backend" / "state.json").read_text())
    killed_at = time.monotonic()
    os.kill(state[session_id]["pid"], signal.SIGKILL)
    session = failed_within(session_id, killed_at)
    assert session.exit_code == 137 and "SIGKILL" in session.status_message
    body = check_logs_and_page(stack, api, alice, session_id, 137)
    assert body["progress"][-1]["step"] == "ready"  # the launch itself went well


@pytest.mark.docker
def test_a_container_that_exits_at_once_fails_with_its_marker(stack, api, alice, docker_agent_id):
    Template.objects.create(
        slug="crashes-in-docker", display_name="Crashes in Docker", platform="docker", image=TEST_IMAGE, command=CRASH
    )
    start_agent(stack, "docker", docker_agent_id, pull="never", stop_timeout="2")
    began = time.monotonic()
    session_id = launch(api, "crashes-in-docker")
    session = failed_within(session_id, began, timeout=20)  # includes creating the container
    assert session.exit_code == 3
    assert session.status_message == "The container exited with code 3 before the session was ready."
    body = check_logs_and_page(stack, api, alice, session_id, 3)
    assert f"{MARKER} cannot open display" in body["log_tail"] and "leaked-1234" not in body["log_tail"]
    assert body["progress"][0] == {**body["progress"][0], "step": "image", "state": "done"}
    assert MARKER in portal_page(stack, alice, session_id)


@pytest.mark.docker
def test_a_running_container_killed_from_outside_fails_within_seconds(
    stack, api, alice, docker_agent_id, docker_client
):
    Template.objects.create(
        slug="serves-in-docker", display_name="Serves in Docker", platform="docker", image=TEST_IMAGE
    )
    start_agent(stack, "docker", docker_agent_id, pull="never", stop_timeout="2")
    session_id = launch(api, "serves-in-docker")
    wait_until(
        lambda: Session.objects.filter(pk=session_id, state=SessionState.RUNNING, streaming_ready=True).exists(),
        what="the session streams",
    )
    killed_at = time.monotonic()
    docker_client.containers.get(f"streamspace-{session_id}").kill()
    session = failed_within(session_id, killed_at)
    assert session.exit_code == 137 and "SIGKILL" in session.status_message
    check_logs_and_page(stack, api, alice, session_id, 137)


@pytest.mark.docker
def test_a_shipped_image_missing_on_the_docker_host_fails_the_launch_naming_make_images(
    stack, api, alice, docker_agent_id
):
    # A version no build ever made: the host lacks it and no registry serves it.
    image = shipped_image("desktop", version="0.0.0-images-absent")
    Template.objects.create(slug="absent-image", display_name="Absent image", platform="docker", image=image)
    start_agent(stack, "docker", docker_agent_id, stop_timeout="2")  # pulls missing images
    began = time.monotonic()
    session_id = launch(api, "absent-image")
    session = failed_within(session_id, began, timeout=30)  # includes the engine's failed pull
    assert image in session.status_message and "`make images`" in session.status_message
    body = api.get(f"/api/v1/sessions/{session_id}").json()
    assert body["progress"][0]["step"] == "image" and body["progress"][0]["state"] == "failed"
    assert image in portal_page(stack, alice, session_id)

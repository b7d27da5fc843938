"""Idle hibernation with every part real.

daphne serves the control plane on the test's PostgreSQL database and Redis db, a
``streamspace-agent --platform local`` runs the built-in demo app (``demo-canvas``), and
``celery -A streamspace worker -B`` runs the idle sweep every second. Two sessions are launched
through the API; one gets a viewer WebSocket through the session proxy, kept open and idle.
With ``idle_timeout_s=5`` the unwatched session is hibernated by the sweep (the agent really
stops its process) and the watched one keeps running for several more sweeps, because the
proxy refreshes ``last_activity`` for open sockets every ``STREAMSPACE_ACTIVITY_WRITE_INTERVAL_S``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from django.db import connection
from django.utils import timezone
from rest_framework_simplejwt.tokens import RefreshToken
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from agent_runtime.backends.local import process_start_time
from sessions_app.demo_catalog import DEMO_TEMPLATES
from sessions_app.models import Session, SessionState, Template
from streamspace.audit.models import AuditEvent
from tests.jobs.test_celery_worker import Workers
from tests.support.stack import Stack, make_agent, running_stack
from tests.support.waits import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SWEEP_PERIOD_S = 1  # Workers runs beat with STREAMSPACE_IDLE_SWEEP_INTERVAL_S=1
IDLE_TIMEOUT_S = 5
CHILD_APP_NAME = "streamspace-jobs-e2e"  # libpq's PGAPPNAME: tells the children's connections apart
SWEEP_DONE = re.compile(rb"Task sessions_app\.tasks\.idle_sweep\[[^\]]+\] succeeded")


@pytest.fixture
def stack(request, tmp_path, settings) -> Iterator[Stack]:
    # The test signs the API's access token. The proxy writes last_activity at most once per
    # interval and refreshes open sockets on it.
    yield from running_stack(
        request,
        tmp_path,
        SECRET_KEY=settings.SECRET_KEY,
        PGAPPNAME=CHILD_APP_NAME,
        STREAMSPACE_ACTIVITY_WRITE_INTERVAL_S="1",
    )
    _wait_for_other_connections_to_close()


@pytest.fixture
def beat(tmp_path) -> Iterator[Workers]:
    """A worker with beat (sweep every second) on a queue of its own; started by the test."""
    queue = f"test-{uuid.uuid4().hex[:10]}"
    group = Workers(tmp_path, queue)
    group.env["PGAPPNAME"] = CHILD_APP_NAME
    yield group
    group.stop_all()
    redis.Redis.from_url(group.env["CELERY_BROKER_URL"]).delete(queue)


def _wait_for_other_connections_to_close(timeout: float = 10.0) -> None:
    """daphne's and the worker's connections end a moment after they exit; the test database
    cannot be dropped before they have."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
                [CHILD_APP_NAME],
            )
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.1)


def _local_state(stack: Stack, instance_id: str) -> dict[str, dict]:
    path = stack.data_dir / f"agent-{instance_id}" / "local-backend" / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _kill_leftovers(stack: Stack, instance_id: str) -> None:
    """Local session processes outlive their agent by design: end any a failed test left behind."""
    for record in _local_state(stack, instance_id).values():
        pid = record.get("pid")
        if pid and process_start_time(pid) == record.get("pid_start"):
            os.killpg(pid, signal.SIGKILL)


def _state(session_id: str) -> dict:
    return Session.objects.values("state", "streaming_ready", "last_activity").get(pk=session_id)


def _sweeps_done(workers: Workers) -> int:
    return len(SWEEP_DONE.findall(workers.logs[0].read_bytes()))


def _open_viewer(api: httpx.Client, stack: Stack, session_id: str) -> ClientConnection:
    """What a browser does: the viewer URL on the session's own origin, its redirect that sets
    the viewer cookie there, the socket (127.0.0.1 dialled, the session's host named)."""
    url = urlsplit(api.get(f"/api/v1/sessions/{session_id}/viewer-url").json()["url"])
    assert url.hostname == f"{session_id}.localhost", url
    with httpx.Client(base_url=stack.base, headers={"Host": url.netloc}, timeout=10) as browser:
        landing = browser.get(f"/?{url.query}", follow_redirects=False)
        assert landing.status_code in (302, 303), landing.text
        assert "token=" not in landing.headers["location"]
        cookie = landing.headers["set-cookie"]
        assert "Path=/;" in cookie and "domain=" not in cookie.lower(), cookie  # this host only
        page = browser.get(landing.headers["location"])  # the cookie alone now opens the app
        assert page.status_code == 200 and b"Demo canvas" in page.content
    name_value = cookie.split(";", 1)[0]
    sock = socket.create_connection(("127.0.0.1", stack.port))
    # No client pings: the socket stays truly idle, only the proxy's keep-alive counts.
    viewer = ws_connect(
        f"ws://{url.netloc}/ws",
        sock=sock,
        additional_headers={"Cookie": name_value, "Origin": f"http://{url.netloc}"},
        ping_interval=None,
        open_timeout=10,
    )
    viewer.send("hello through the proxy")
    assert viewer.recv(timeout=10) == "hello through the proxy"
    return viewer


def test_the_sweep_hibernates_the_unwatched_session_only(stack, beat, alice):
    demo = next(t for t in DEMO_TEMPLATES if t["slug"] == "demo-canvas")
    Template.objects.create(**{k: v for k, v in demo.items() if k != "tags"})
    agent, token = make_agent("local-jobs", "local")
    instance_id = "local-jobs-a"
    stack.start_agent(agent, token, instance_id)
    wait_until(lambda: agent.instances.filter(connected=True, is_leader=True).exists(), what="the agent leader")

    access = RefreshToken.for_user(alice).access_token
    api = httpx.Client(base_url=stack.base, headers={"Authorization": f"Bearer {access}"}, timeout=30)
    session_ids: list[str] = []
    viewer: ClientConnection | None = None
    try:
        for name in ("watched", "unwatched"):
            response = api.post("/api/v1/sessions", json={"template": "demo-canvas", "name": name})
            assert response.status_code == 202, response.text
            session_ids.append(response.json()["id"])
        watched, unwatched = session_ids
        for session_id in session_ids:
            wait_until(
                lambda sid=session_id: (s := _state(sid))["state"] == SessionState.RUNNING and s["streaming_ready"],
                timeout=60,
                what=f"session {session_id} running and streaming-ready",
            )
        process = _local_state(stack, instance_id)[unwatched]
        assert process_start_time(process["pid"]) == process["pid_start"]  # the demo app runs

        beat.start(beat=True)
        viewer = _open_viewer(api, stack, watched)

        # The API's minimum is 60 s; the test wants the sweep to act within seconds.
        Session.objects.filter(pk__in=session_ids).update(idle_timeout_s=IDLE_TIMEOUT_S, last_activity=timezone.now())
        started = time.monotonic()
        wait_until(
            lambda: _state(unwatched)["state"] == SessionState.HIBERNATED,
            timeout=IDLE_TIMEOUT_S + 40,
            what="the unwatched session hibernated by the sweep",
        )
        assert time.monotonic() - started >= IDLE_TIMEOUT_S - 1  # not before its idle timeout
        # the agent really stopped the demo app's process
        assert process_start_time(process["pid"]) != process["pid_start"]
        assert _local_state(stack, instance_id)[unwatched]["state"] == "hibernated"
        session = Session.objects.get(pk=unwatched)
        assert session.commands.filter(action="hibernate_session", state="succeeded").count() == 1
        assert AuditEvent.objects.filter(
            action="session.hibernate", target_id=unwatched, details__reason="idle"
        ).exists()

        # Three more sweep periods, each with a completed sweep, while the viewer stays idle.
        hibernated_at, sweeps_then = time.monotonic(), _sweeps_done(beat)
        deadline = hibernated_at + 3 * SWEEP_PERIOD_S + 30
        while _sweeps_done(beat) < sweeps_then + 3 or time.monotonic() - hibernated_at < 3 * SWEEP_PERIOD_S:
            assert _state(watched)["state"] == SessionState.RUNNING, "the watched session was hibernated"
            assert time.monotonic() < deadline, "beat stopped sweeping\n" + beat.logs[0].read_text()[-3000:]
            time.sleep(0.1)
        state = _state(watched)
        assert state["state"] == SessionState.RUNNING and state["streaming_ready"]
        assert (timezone.now() - state["last_activity"]).total_seconds() < IDLE_TIMEOUT_S
        assert not Session.objects.get(pk=watched).commands.filter(action="hibernate_session").exists()
        viewer.send("still here")  # the socket is alive, not a stale half-open one
        assert viewer.recv(timeout=10) == "still here"
    finally:
        if viewer is not None:
            viewer.close()
        for session_id in session_ids:
            api.delete(f"/api/v1/sessions/{session_id}")
        try:
            for session_id in session_ids:
                wait_until(lambda sid=session_id: _state(sid)["state"] == SessionState.STOPPED, timeout=30)
        finally:
            api.close()
            _kill_leftovers(stack, instance_id)

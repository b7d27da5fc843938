"""End to end: real daphne + PostgreSQL + Redis + real ``streamspace-agent`` processes + Docker.

``POST /api/v1/sessions`` → the hub sends ``start_session`` to the agent's leader → the
container runs → the session reads ``running`` with ``streaming_ready``. Then HA: two agent
replicas per lease backend, ``kill -9`` the leader, and the next command goes to the new
leader while the sessions started before keep running and stay tracked.
"""

from __future__ import annotations

import secrets
import signal
import time

import httpx
import pytest
from asgiref.sync import sync_to_async
from rest_framework_simplejwt.tokens import RefreshToken

from agents_app.models import AgentInstance
from agents_app.services import create_agent
from sessions_app.models import Template
from tests.support.docker import TEST_IMAGE
from tests.support.processes import spawn_agent, start_daphne, stop
from tests.support.waits import until

from .test_leader import FAST, REDIS_URL, need_redis

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def daphne(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        server = start_daphne({"AGENT_HEARTBEAT_INTERVAL_S": "1", "AGENT_HEARTBEAT_DB_WRITE_S": "0"})
    yield server
    stop(server.process)
    with django_db_blocker.unblock():
        _wait_for_other_connections_to_close()


def _wait_for_other_connections_to_close(timeout: float = 5.0) -> None:
    """daphne's pooled PostgreSQL connections end a moment after it exits; the test database
    cannot be dropped before they have."""
    from django.db import connection

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.05)


@pytest.fixture(autouse=True)
async def _close_thread_connections():
    """sync_to_async runs the ORM in a worker thread with its own connection: close it, or the
    test database cannot be dropped at the end of the run."""
    yield
    from django.db import connections

    await sync_to_async(connections.close_all)()


@pytest.fixture
def docker_template(db) -> Template:
    return Template.objects.create(
        slug="e2e-session",
        display_name="E2E session",
        image=TEST_IMAGE,
        platform="docker",
        streaming_port=8080,
        default_cpu_millicores=250,
        default_memory_mb=64,
    )


@pytest.fixture
def api(daphne, alice):
    token = RefreshToken.for_user(alice).access_token
    with httpx.Client(base_url=daphne.base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        yield client


@pytest.fixture
async def agents(daphne, tmp_path, request):
    started = []
    local_dirs = []

    async def _spawn(
        token: str, instance_id: str, env: dict[str, str] | None = None, *, agent_id: str, platform="docker"
    ):
        proc = await spawn_agent(
            daphne.base,
            token,
            instance_id=instance_id,
            platform=platform,
            agent_id=agent_id,
            data_dir=tmp_path / instance_id,
            env={"STREAMSPACE_DOCKER_PULL": "never", "STREAMSPACE_DOCKER_STOP_TIMEOUT": "3", **(env or {})},
        )
        started.append(proc)
        if platform == "local":
            local_dirs.append((agent_id, tmp_path / instance_id))
        return proc

    yield _spawn
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for proc in started:
        await proc.stop()
        if failed:
            import sys

            sys.stderr.write(f"--- agent {proc.instance_id}\n{proc.log()[-4000:]}\n")
    # Local sessions outlive their agent by design; a failed test must not leave them behind.
    from agent_runtime.backends.base import SessionSpec
    from agent_runtime.backends.local import LocalBackend

    for agent_id, data_dir in local_dirs:
        backend = LocalBackend(agent_id=agent_id, data_dir=data_dir)
        for item in await backend.inventory():
            await backend.stop(item.session_id, SessionSpec())


def leader_of(agent_id: str) -> str | None:
    instance = AgentInstance.objects.filter(agent__agent_id=agent_id, connected=True, is_leader=True).first()
    return instance.instance_id if instance else None


async def session_where(api, session_id: str, **expected):
    async def check():
        body = (await sync_to_async(api.get)(f"/api/v1/sessions/{session_id}")).json()
        return body if all(body.get(k) == v for k, v in expected.items()) else None

    return await until(check, what=f"session {session_id} with {expected}")


async def launch(api, template_slug: str) -> str:
    response = await sync_to_async(api.post)(
        "/api/v1/sessions", json={"template": template_slug, "persistent_home": False}
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


@pytest.mark.docker
async def test_post_session_runs_a_container(api, agents, docker_template, docker_agent_id, docker_client):
    agent, token = await sync_to_async(create_agent)(docker_agent_id, "docker")
    await agents(token, "solo", agent_id=docker_agent_id)
    await until(sync_to_async(lambda: leader_of(docker_agent_id)), what="agent registered as leader")
    session_id = await launch(api, docker_template.slug)
    body = await session_where(api, session_id, state="running", streaming_ready=True)
    assert body["agent_id"] == docker_agent_id
    container = docker_client.containers.get(f"streamspace-{session_id}")
    assert container.status == "running" and container.labels["streamspace.session-id"] == session_id
    response = await sync_to_async(api.delete)(f"/api/v1/sessions/{session_id}")
    assert response.status_code in (200, 202, 204), response.text
    await session_where(api, session_id, state="stopped")
    assert not docker_client.containers.list(all=True, filters={"name": f"streamspace-{session_id}"})


async def leader_and_follower(agents, token: str, agent_id: str, env: dict, *, leader_env: dict | None = None):
    """Two replicas of ``agent_id``: ``first`` (with ``leader_env`` added to ``env``) once it
    leads, then ``second`` once connected as its follower. Returns the first's process."""
    first = await agents(token, "first", {**env, **(leader_env or {})}, agent_id=agent_id)
    await until(sync_to_async(lambda: leader_of(agent_id) == "first"), what="first is leader")
    await agents(token, "second", env, agent_id=agent_id)
    await until(
        sync_to_async(
            lambda: AgentInstance.objects.filter(instance_id="second", connected=True, is_leader=False).exists()
        ),
        what="second connected as follower",
    )
    return first


@pytest.mark.docker
@pytest.mark.parametrize("backend", ["file", "redis"])
async def test_ha_failover_routes_to_the_new_leader(
    backend, api, agents, docker_template, docker_agent_id, docker_client, tmp_path
):
    if backend == "redis":
        need_redis()
    env = {"ENABLE_HA": "true", "HA_BACKEND": backend, "LEASE_KEY": f"e2e-{secrets.token_hex(4)}", **FAST}
    if backend == "file":
        env["FILE_LOCK_PATH"] = str(tmp_path / "leader.lock")
    else:
        env["REDIS_URL"] = REDIS_URL
    agent, token = await sync_to_async(create_agent)(docker_agent_id, "docker")
    first = await leader_and_follower(agents, token, docker_agent_id, env)
    before = await launch(api, docker_template.slug)
    await session_where(api, before, state="running", streaming_ready=True)

    killed_at = time.monotonic()
    first.signal(signal.SIGKILL)
    await until(sync_to_async(lambda: leader_of(docker_agent_id) == "second"), what="second took over")
    print(f"\n{backend}: control plane sees the new leader {time.monotonic() - killed_at:.2f} s after kill -9")

    after = await launch(api, docker_template.slug)
    body = await session_where(api, after, state="running", streaming_ready=True)
    assert docker_client.containers.get(f"streamspace-{after}").status == "running"
    # the session started before the failover is still running, and the new leader manages it
    assert docker_client.containers.get(f"streamspace-{before}").status == "running"
    assert (await sync_to_async(api.get)(f"/api/v1/sessions/{before}")).json()["state"] == "running"
    assert (await sync_to_async(api.post)(f"/api/v1/sessions/{before}/hibernate")).status_code in (200, 202)
    await session_where(api, before, state="hibernated")
    assert docker_client.containers.get(f"streamspace-{before}").status == "exited"
    assert body["agent_id"] == docker_agent_id


async def test_the_local_agent_of_make_run_serves_the_demo_canvas(api, agents, tmp_path):
    """What `make run` does: ensure_local_agent writes a token, the local agent runs the demo app."""
    from django.core.management import call_command

    from sessions_app.demo_catalog import DEMO_TEMPLATES

    demo = next(t for t in DEMO_TEMPLATES if t["slug"] == "demo-canvas")
    await sync_to_async(Template.objects.create)(**{k: v for k, v in demo.items() if k != "tags"})
    token_file = tmp_path / "local-agent.token"
    await sync_to_async(call_command)("ensure_local_agent", "--token-file", str(token_file))
    await agents(token_file.read_text().strip(), "local-1", agent_id="local", platform="local")
    await until(sync_to_async(lambda: leader_of("local")), what="local agent registered")
    session_id = await launch(api, "demo-canvas")
    body = await session_where(api, session_id, state="running", streaming_ready=True)
    endpoint = body.get("endpoint") or await sync_to_async(_endpoint_of)(session_id)
    page = await sync_to_async(httpx.get)(f"http://{endpoint}/", timeout=5)
    assert b"Demo canvas" in page.content
    assert (await sync_to_async(api.delete)(f"/api/v1/sessions/{session_id}")).status_code in (200, 202, 204)
    await session_where(api, session_id, state="stopped")


def _endpoint_of(session_id: str) -> str:
    from sessions_app.models import Session

    return Session.objects.get(pk=session_id).endpoint


def _stopped(pid: int) -> bool:
    """Whether the process is stopped by a signal (state ``T`` in /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.docker
async def test_a_leader_paused_inside_a_start_leaves_no_container_for_the_session_stopped_meanwhile(
    api, agents, docker_template, docker_agent_id, docker_client
):
    """Issue 17: the leader stops itself (SIGSTOP, the test-only hook of
    agent_runtime/backends/base.py) inside the start, after its mandate check and before the
    container's create; the other replica takes over and runs the user's stop; resumed, the
    paused one's create reaches the engine, it finds its mandate gone, removes the container it
    created and answers not_leader. The session stays stopped and no container is left."""
    need_redis()
    env = {
        "ENABLE_HA": "true",
        "HA_BACKEND": "redis",
        "REDIS_URL": REDIS_URL,
        "LEASE_KEY": f"e2e-{secrets.token_hex(4)}",
        **FAST,
        # One shared network: the successor's stop removes no network the paused create needs.
        "STREAMSPACE_DOCKER_ISOLATION": "shared",
        "STREAMSPACE_DOCKER_NETWORK": f"fence-net-{docker_agent_id}",
    }
    from agent_runtime.backends.base import PAUSE_AT_ENV
    from agents_app.models import AgentCommand, CommandState

    agent, token = await sync_to_async(create_agent)(docker_agent_id, "docker")
    first = await leader_and_follower(agents, token, docker_agent_id, env, leader_env={PAUSE_AT_ENV: "create"})
    session_id = await launch(api, docker_template.slug)
    await until(lambda: _stopped(first.pid), what="the leader paused before the container's create")
    await until(sync_to_async(lambda: leader_of(docker_agent_id) == "second"), what="second took over")
    response = await sync_to_async(api.delete)(f"/api/v1/sessions/{session_id}")
    assert response.status_code in (200, 202, 204), response.text
    await session_where(api, session_id, state="stopped")

    def start_command() -> AgentCommand:
        return AgentCommand.objects.get(session_id=session_id, action="start_session")

    assert (await sync_to_async(start_command)()).state == CommandState.ACKED  # by the paused leader
    first.signal(signal.SIGCONT)
    unfinished = (CommandState.PENDING, CommandState.SENT, CommandState.ACKED)
    done = await until(
        sync_to_async(lambda: (c := start_command()).state not in unfinished and c), what="the start answered"
    )
    # Not carried out: answered not_leader, it is superseded by the stop that finished before it.
    assert done.state == CommandState.EXPIRED, (done.state, done.error)
    assert "launch fenced" in first.log()
    assert docker_client.containers.list(all=True, filters={"name": f"streamspace-{session_id}"}) == []
    assert (await sync_to_async(api.get)(f"/api/v1/sessions/{session_id}")).json()["state"] == "stopped"


@pytest.mark.docker
async def test_a_container_running_for_a_stopped_session_is_stopped_by_the_control_plane(
    api, agents, docker_template, docker_agent_id, docker_client
):
    """Issue 17, the control plane's half: a deposed leader paused after its last mandate check
    still gets its container created and started (the call was on its way to the engine). The
    test makes that container itself, for a session the user stopped; the leader reports it
    running, and the control plane queues its stop instead of moving the session back."""
    from agents_app.models import AgentCommand
    from streamspace.audit.models import AuditEvent

    agent, token = await sync_to_async(create_agent)(docker_agent_id, "docker")
    await agents(token, "solo", agent_id=docker_agent_id)
    await until(sync_to_async(lambda: leader_of(docker_agent_id)), what="agent registered as leader")
    session_id = await launch(api, docker_template.slug)
    await session_where(api, session_id, state="running")
    assert (await sync_to_async(api.delete)(f"/api/v1/sessions/{session_id}")).status_code in (200, 202, 204)
    await session_where(api, session_id, state="stopped")
    stray = docker_client.containers.run(
        TEST_IMAGE,
        name=f"streamspace-{session_id}",
        labels={"streamspace.managed-by": docker_agent_id, "streamspace.session-id": session_id},
        detach=True,
    )
    await until(
        lambda: not docker_client.containers.list(all=True, filters={"id": stray.id}),
        what="the stray container stopped and removed",
    )
    assert (await sync_to_async(api.get)(f"/api/v1/sessions/{session_id}")).json()["state"] == "stopped"

    def stops() -> list[str]:
        rows = AgentCommand.objects.filter(session_id=session_id, action="stop_session").order_by("created_at")
        return list(rows.values_list("state", flat=True))

    # The user's stop, then the correction (its result follows the removal).
    await until(sync_to_async(lambda: stops() == ["succeeded", "succeeded"]), what="both stops succeeded")
    event = await sync_to_async(AuditEvent.objects.get)(action="session.stray_workload", target_id=session_id)
    assert event.details["command"] == "stop_session" and event.details["state"] == "stopped"

"""A control plane and a local agent on a Redis Sentinel set, all real processes: sessions are
launched and stopped through the API across a SENTINEL FAILOVER and across a killed master,
and one is launched while the master is down.
Every command (durable in PostgreSQL, carried by the channel layer) reaches the agent, runs
exactly once and ends ``succeeded``; every session ends in the state asked for. The agent holds
its leader lease in the same Redis (``HA_BACKEND=redis``) through the Sentinels.

The control plane is given ``REDIS_URL`` with a closed port: only the Sentinels lead to Redis.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from rest_framework_simplejwt.tokens import RefreshToken

from agent_runtime.backends.local import process_start_time
from agents_app.models import AgentCommand, CommandState
from sessions_app.models import Session, SessionState, Template
from tests.support import ROOT
from tests.support.agent_logs import executions
from tests.support.sentinel import SentinelCluster
from tests.support.stack import Stack, make_agent, running_stack, wait_for_other_connections_to_close
from tests.support.waits import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SWEEP = "from agents_app.sweeps import requeue_unacked_commands; requeue_unacked_commands(0)"
SERVES = ["{python}", "-m", "agent_runtime.demo_app", "--port", "{port}", "--home", "{home}"]


def kill_local_sessions(data_dir: Path) -> None:
    """Local sessions outlive their agent by design: end any a test left behind."""
    for state in data_dir.glob("agent-*/local-backend/state.json"):
        for record in json.loads(state.read_text()).values():
            pid = record.get("pid")
            if pid and record.get("pid_start") and process_start_time(pid) == record["pid_start"]:
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def stack(request, tmp_path, settings, cluster: SentinelCluster) -> Iterator[Stack]:
    # The test signs access tokens with the stack's key.
    yield from running_stack(request, tmp_path, **cluster.env(db=2), SECRET_KEY=settings.SECRET_KEY)
    wait_for_other_connections_to_close()


@pytest.fixture
def api(stack, alice) -> Iterator[httpx.Client]:
    token = RefreshToken.for_user(alice).access_token
    with httpx.Client(base_url=stack.base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        yield client


def ask_launch(api: httpx.Client) -> str:
    response = api.post("/api/v1/sessions", json={"template": "serves", "persistent_home": False})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def launch(api: httpx.Client, session_id: str | None = None) -> str:
    session_id = session_id or ask_launch(api)
    wait_until(
        lambda: Session.objects.filter(pk=session_id, state=SessionState.RUNNING, streaming_ready=True).exists(),
        timeout=60,
        what=f"session {session_id} streams",
    )
    return session_id


def stop(api: httpx.Client, session_id: str) -> None:
    response = api.delete(f"/api/v1/sessions/{session_id}")
    assert response.status_code == 202, response.text
    wait_until(
        lambda: Session.objects.filter(pk=session_id, state=SessionState.STOPPED).exists(),
        timeout=60,
        what=f"session {session_id} stopped",
    )


def commands_done(stack: Stack, instance_id: str) -> Counter:
    """``command_id`` → how many times the agent's log says it executed the command."""
    return executions((stack.data_dir / f"agent-{instance_id}.log").read_text().splitlines())


def test_launch_and_stop_across_a_failover_and_a_killed_master(stack, api, cluster: SentinelCluster) -> None:
    Template.objects.create(slug="serves", display_name="Serves", platform="local", command=SERVES)
    agent, token = make_agent("local-sentinel", "local")
    # The agent leads through its Redis lease, on the same Sentinels: it must stay leader.
    stack.env.update(ENABLE_HA="true", HA_BACKEND="redis", RETRY_PERIOD="1s")
    stack.start_agent(agent, token, "local-sentinel-a")
    wait_until(lambda: agent.instances.filter(connected=True, is_leader=True).exists(), what="the agent leader")

    first = launch(api)
    cluster.failover()
    second = launch(api)
    stop(api, first)
    old_master = cluster.master_port
    cluster.kill_master()
    third = launch(api)
    stop(api, second)
    cluster.revive(old_master)

    # A launch while the master is down: the API answers 202 (the command is a row); the
    # send either reaches the new master through the client's retries or is left pending,
    # and the command sweep (run here once, as Celery beat runs it) sends it.
    killing = threading.Thread(target=cluster.kill_master)
    killing.start()
    fourth = ask_launch(api)
    killing.join(60)
    sweep = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SWEEP],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sweep.returncode == 0, sweep.stderr
    launch(api, fourth)
    stop(api, third)
    stop(api, fourth)

    states = dict(Session.objects.filter(pk__in=[first, second, third, fourth]).values_list("pk", "state"))
    assert set(states.values()) == {SessionState.STOPPED}
    commands = list(AgentCommand.objects.filter(agent=agent).values_list("id", "action", "state"))
    assert Counter(action for _, action, _ in commands) == {"start_session": 4, "stop_session": 4}, commands
    assert {state for _, _, state in commands} == {CommandState.SUCCEEDED}, commands
    ran = commands_done(stack, "local-sentinel-a")
    assert ran == Counter({str(command_id): 1 for command_id, _, _ in commands}), ran
    assert httpx.get(stack.base + "/readyz", timeout=10).status_code == 200
    # The lease lives on the master of now, in REDIS_URL's database 2, held by the agent.
    lease = redis.Redis(host="127.0.0.1", port=cluster.master_port, db=2, password=cluster.password, socket_timeout=5)
    assert (lease.get("local-agent-leader") or b"").decode().startswith("local-sentinel-a:")

"""deploy/docker-compose.sentinel.yml brought up for real on top of deploy/docker-compose.yml
(tests/deploy/compose_stack.py; the sentinel file's redis:7 services run the locally built
Debian image, tests/deploy/sentinel-override.yml): a Redis master, a replica and three
Sentinels, every StreamSpace service finding the master through the Sentinels.

A user launches a session through nginx; the Redis master container is killed and a second
launch is asked at once, while there is no master; the Sentinels promote the replica. Then both
control planes are ready again, a new launch streams, so does the one asked during the outage,
the agent is connected and leads, and all three sessions stop; every command ran exactly once
(the database's rows and the agent replicas' logs), every session is in the state asked for.
The Sentinels, stopped and started again after the failover, still name the new master, and
the old master, started again, rejoins as a replica of the new one.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.deploy.compose_stack import HERE, Stack, answers, commands_executed, compose_stack, project_name, signed_in
from tests.deploy.conftest import DEPLOY
from tests.support.waits import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1800)]

SENTINELS = ("redis-sentinel-1", "redis-sentinel-2", "redis-sentinel-3")
# 0 when this control plane's /readyz answers 200 (PostgreSQL and Redis, through the Sentinels).
READY = (
    "import urllib.request as u; "
    "u.urlopen(u.Request('http://127.0.0.1:8000/readyz', headers={'Host': 'localhost'}), timeout=5)"
)
STATE = """
import json
from agents_app.models import AgentCommand, AgentInstance
from sessions_app.models import Session
print(json.dumps({
    "commands": [[str(i), a, s] for i, a, s in AgentCommand.objects.values_list("id", "action", "state")],
    "attempts": sorted(AgentCommand.objects.values_list("attempts", flat=True)),
    "sessions": dict((str(i), s) for i, s in Session.objects.values_list("id", "state")),
    "leaders": AgentInstance.objects.filter(connected=True, is_leader=True).count(),
}))
"""


@pytest.fixture(scope="module")
def stack(request, docker_client, tmp_path_factory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("compose-sentinel")
    files = [HERE / "stack-override.yml", DEPLOY / "docker-compose.sentinel.yml", HERE / "sentinel-override.yml"]
    with compose_stack(request, docker_client, workdir, project_name("sentinel"), files) as stack:
        yield stack


def master_named_by(container) -> str | None:
    """The master's host as this Sentinel names it (None while it cannot answer)."""
    code, out = container.exec_run(
        ["redis-cli", "-p", "26379", "--raw", "sentinel", "get-master-addr-by-name", "streamspace"]
    )
    lines = out.decode().split()
    return lines[0] if code == 0 and len(lines) == 2 and lines[1] == "6379" else None


def quorum(container) -> bool:
    code, out = container.exec_run(["redis-cli", "-p", "26379", "sentinel", "ckquorum", "streamspace"])
    return code == 0 and out.startswith(b"OK")


def ready(container) -> bool:
    code, _ = container.exec_run(["python", "-c", READY])
    return code == 0


def state(stack: Stack) -> dict:
    return json.loads(stack.manage("shell", "-c", STATE).strip().splitlines()[-1])


def test_a_killed_master_fails_over_without_losing_or_repeating_a_command(stack, docker_client):
    sentinels = [stack.container(docker_client, name) for name in SENTINELS]
    assert [master_named_by(s) for s in sentinels] == ["redis"] * 3
    with signed_in(stack) as user:
        first = user.launch()

        killed = time.monotonic()
        stack.container(docker_client, "redis").kill()
        # Asked while there is no master: the command is a row first, and is sent when Redis
        # takes it (the client's retries, or Celery's command sweep for a send that failed).
        with ThreadPoolExecutor(1) as pool:
            asking = pool.submit(lambda: (user.ask_launch(), time.monotonic()))
            wait_until(
                lambda: all(master_named_by(s) == "redis-replica" for s in sentinels),
                timeout=120,
                interval=0.2,
                what="the Sentinels to promote the replica",
            )
            promoted = time.monotonic()
            during, accepted = asking.result(timeout=180)
        wait_until(lambda: answers(stack.url + "/readyz"), timeout=120, interval=0.2, what="a ready control plane")
        answering = time.monotonic()
        # A frame the channel layer lost in the switch is sent again by Celery's command sweep
        # (AGENT_COMMAND_ACK_TIMEOUT_S, then the sweep's next run): up to a minute more.
        second = user.launch(timeout=180)
        launched = time.monotonic()
        user.wait_streaming(during, timeout=180)
        print(
            f"\nfailover: new master {promoted - killed:.1f} s after the kill, a ready control plane "
            f"{answering - killed:.1f} s, the next launch streaming {launched - killed:.1f} s; the launch "
            f"asked at the kill accepted {accepted - killed:.1f} s, streaming {time.monotonic() - killed:.1f} s"
        )

        planes = [stack.container(docker_client, name) for name in ("control-plane-1", "control-plane-2")]
        wait_until(lambda: all(ready(plane) for plane in planes), timeout=60, what="both control planes ready")
        assert state(stack)["leaders"] == 1
        assert user.agent_ready()
        for session_id in (first, during, second):
            user.stop(session_id)
        wait_until(
            lambda: set(state(stack)["sessions"].values()) == {"stopped"}, timeout=90, what="the sessions stopped"
        )

    after = state(stack)
    print(f"commands' attempts: {after['attempts']}")
    assert after["sessions"] == {first: "stopped", during: "stopped", second: "stopped"}
    assert Counter(action for _, action, _ in after["commands"]) == {"start_session": 3, "stop_session": 3}
    assert {command_state for _, _, command_state in after["commands"]} == {"succeeded"}, after["commands"]
    assert commands_executed(stack, docker_client) == Counter({command_id: 1 for command_id, _, _ in after["commands"]})
    assert not docker_client.containers.list(all=True, filters={"label": f"streamspace.managed-by={stack.agent_id}"})

    # The Sentinels stopped and started together (a host's reboot) keep the master they learned
    # (their own configuration files): none is left to tell them, and the first master's
    # container is gone, so its name does not resolve.
    for sentinel in sentinels:
        sentinel.stop(timeout=5)
    for sentinel in sentinels:
        sentinel.start()
    wait_until(
        lambda: all(master_named_by(s) == "redis-replica" for s in sentinels),
        timeout=60,
        what="the restarted Sentinels to name the new master",
    )
    wait_until(lambda: quorum(sentinels[0]), timeout=60, what="the restarted Sentinels to find each other")

    # The old master, started again, is made a replica of the new one.
    assert not stack.containers(docker_client, "redis")  # docker kill is a stop: no restart policy
    (old,) = stack.containers(docker_client, "redis", stopped=True)
    old.start()

    def replicates() -> bool:
        code, out = old.exec_run(["redis-cli", "info", "replication"])
        text = out.decode()
        return code == 0 and "role:slave" in text and "master_host:redis-replica" in text

    wait_until(replicates, timeout=90, interval=0.5, what="the old master to replicate the new one")

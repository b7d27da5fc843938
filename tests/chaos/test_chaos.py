"""Issue 17: the production topology under faults, as real processes.

Three control-plane replicas behind nginx (the compose config), a PostgreSQL cluster of the
test's own, Redis as a master, a replica and two Sentinels of its own, a Celery worker with
beat, a Docker agent and a local agent with two replicas each. The agents reach the control
plane as deployed agents on other hosts do: through nginx, the URL users use (its affinity
keys them by address), electing their leaders with the Redis lease through the Sentinels, so
the Redis master kill hits the leases too. A user launches, stops, hibernates and wakes sessions through the
load balancer while a viewer's WebSocket through the session proxy echoes. Meanwhile a
control-plane replica is SIGKILLed every few seconds (restarted at once; the next one is
killed ``REPLICA_KILL_GAP_S`` after it listens again, so one replica is down at a time), the Redis master is
SIGKILLed (the Sentinels promote the replica; the old master comes back as a replica), each agent's leader is SIGSTOPped (and SIGCONTed later), and PostgreSQL
is restarted once (an immediate shutdown: the crash a killed postmaster leaves).

Afterwards, within a bounded settle time: every session is in the state its last accepted
request asked for; no command ran twice; no container or local session process is left
without a session that wants it; the user's session quota was never exceeded; the viewer's
stream came back within ``VIEWER_RESUME_TARGET_S`` after every interruption. The figures are
printed (``-s``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.chaos.figures import executions, leaderless, percentile, reconnects
from tests.chaos.operations import Ledger, OperationStream, Probe
from tests.chaos.viewer import Viewer
from tests.support.ci import unavailable
from tests.support.docker import TEST_IMAGE, remove_networks
from tests.support.nginx import NGINX
from tests.support.postgres_cluster import available as postgres_available
from tests.support.sentinel import SentinelCluster
from tests.support.topology import Topology
from tests.support.waits import until

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.docker, pytest.mark.postgres, pytest.mark.timeout(290)]

RUN_S = 70.0  # the operation stream and the faults
REPLICA_KILL_GAP_S = 3.0
SETTLE_S = 60.0  # the most the sessions may take to reach their targets afterwards
VIEWER_RESUME_TARGET_S = 15.0
MAX_SESSIONS = 4
CONTROL_PLANE = {
    "AGENT_HEARTBEAT_INTERVAL_S": "2",
    "AGENT_HEARTBEAT_DB_WRITE_S": "0",
    "AGENT_COMMAND_ACK_TIMEOUT_S": "5",
    "STREAMSPACE_QUOTA_RECONCILE_S": "10",
    "STREAMSPACE_DEFAULT_IDLE_TIMEOUT_S": "0",
}
AGENT = {
    "LEASE_DURATION": "3s",
    "RENEW_DEADLINE": "2s",
    "RETRY_PERIOD": "500ms",
    "STREAMSPACE_DOCKER_PULL": "never",
    "STREAMSPACE_DOCKER_STOP_TIMEOUT": "2",
}
LOCAL_COMMAND = ["{python}", "-m", "agent_runtime.demo_app", "--port", "{port}", "--home", "{home}"]


@pytest.fixture
async def topology(docker_client, tmp_path):
    if not postgres_available():
        unavailable("needs PostgreSQL's server binaries (/usr/lib/postgresql/15/bin; scripts/ensure-services.sh)")
    if not Path(NGINX).is_file():
        unavailable("needs nginx (scripts/ensure-deploy-tools.sh)")
    root = Path(tempfile.mkdtemp(prefix="chaos-"))
    os.chmod(root, 0o755)
    redis = SentinelCluster(sentinels=2, master_name="chaos")
    await asyncio.to_thread(redis.start)
    running = Topology(root=root, redis_env=redis.env(db=0))
    running.redis = redis  # type: ignore[attr-defined]
    suffix = os.urandom(3).hex()
    running.ids = {"docker": f"chaos-docker-{suffix}", "local": f"chaos-local-{suffix}"}  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        for agent in running.agents.values():
            agent.signal(signal.SIGCONT)
        await running.stop()
        redis.stop()
        docker_id = running.ids["docker"]  # type: ignore[attr-defined]
        for container in docker_client.containers.list(
            all=True, filters={"label": f"streamspace.managed-by={docker_id}"}
        ):
            container.remove(force=True)
        remove_networks(docker_client, docker_id)
        from agent_runtime.backends.base import SessionSpec
        from agent_runtime.backends.local import LocalBackend

        backend = LocalBackend(agent_id=running.ids["local"], data_dir=root / "agent-local")  # type: ignore[attr-defined]
        for item in await backend.inventory():
            await backend.stop(item.session_id, SessionSpec())
        for pid in _local_session_processes(root / "agent-local").values():  # orphans the state file lost
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for log in running.logs():  # kept with pytest's temporary directories, for a post-mortem
            if log.exists():
                shutil.copy(log, tmp_path / log.name)
        shutil.rmtree(root, ignore_errors=True)


async def test_sessions_survive_the_faults(topology, docker_client):
    t = topology
    ids = t.ids
    began = time.monotonic()
    await asyncio.to_thread(t.start_database, CONTROL_PLANE)
    seeded = await asyncio.to_thread(
        t.seed,
        {"chaos-user": MAX_SESSIONS, "chaos-viewer": None},
        {ids["docker"]: "docker", ids["local"]: "local"},
        [
            {"slug": "chaos-docker", "display_name": "Chaos (Docker)", "image": TEST_IMAGE, "platform": "docker",
             "streaming_port": 8080, "default_cpu_millicores": 100, "default_memory_mb": 64},
            {"slug": "chaos-local", "display_name": "Chaos (local)", "platform": "local", "command": LOCAL_COMMAND,
             "default_cpu_millicores": 100, "default_memory_mb": 64},
        ],
    )  # fmt: skip
    await asyncio.to_thread(t.start_replicas, 3)
    t.start_nginx()
    t.start_celery()
    # The lease an operator of this topology uses for replicas on different hosts: Redis, through
    # the Sentinels (the database the compose agent uses, apart from the control plane's).
    lease = {"HA_BACKEND": "redis", **t.redis.env(db=1)}
    for platform in ("docker", "local"):
        for replica in ("a", "b"):
            await t.start_agent(
                ids[platform], platform, seeded["agents"][ids[platform]], f"{platform}-{replica}",
                t.root / f"agent-{platform}", AGENT, lease,
            )  # fmt: skip
    for platform in ("docker", "local"):
        await until(lambda p=platform: asyncio.to_thread(t.leader, ids[p]), timeout=60, what=f"{platform} leader")
    user = seeded["users"]["chaos-user"]
    bearer = {"Authorization": f"Bearer {user['access']}"}
    viewer_bearer = {"Authorization": f"Bearer {seeded['users']['chaos-viewer']['access']}"}
    async with (
        httpx.AsyncClient(base_url=t.base, headers=bearer, timeout=15) as api,
        httpx.AsyncClient(base_url=t.base, headers=viewer_bearer, timeout=15) as viewer_api,
    ):
        # The viewer's session: launched before the faults, never touched by the stream.
        launched = await viewer_api.post(
            "/api/v1/sessions", json={"template": "chaos-docker", "persistent_home": False}
        )
        assert launched.status_code == 202, launched.text
        viewed = launched.json()["id"]

        async def streaming() -> bool:
            body = (await viewer_api.get(f"/api/v1/sessions/{viewed}")).json()
            return body["state"] == "running" and body["streaming_ready"]

        await until(streaming, timeout=60, what="the viewer's session streams")
        setup_s = time.monotonic() - began

        ledger = Ledger()
        stream = OperationStream(api, ["chaos-docker", "chaos-local"], ledger)
        probe = Probe(api)
        viewer = Viewer(f"ws://127.0.0.1:{t.nginx_port}/api/v1/http/{viewed}/", viewer_bearer)
        quota_peak = [0]
        faults: list[tuple[str, float]] = []
        redis_killed_at = [0.0]
        figures: dict[str, float] = {}
        stop_at = time.monotonic() + RUN_S

        async def sample_quota() -> None:
            while time.monotonic() < stop_at:
                try:
                    rows = await asyncio.to_thread(
                        t.query,
                        "SELECT count(*) FROM sessions_app_session WHERE user_id = %s AND state NOT IN ('stopped', 'failed')",
                        user["id"],
                    )
                    quota_peak[0] = max(quota_peak[0], rows[0][0])
                except Exception:  # the database is restarting
                    pass
                await asyncio.sleep(0.3)

        async def leader_process(platform: str):
            instance = await until(lambda: asyncio.to_thread(t.leader, ids[platform]), timeout=30)
            return t.agents[instance]

        async def chaos() -> None:
            start = time.monotonic()

            async def at(second: float) -> None:
                await asyncio.sleep(max(0.0, start + second - time.monotonic()))

            schedule = sorted(
                [(12, "redis"), (20, "revive-redis"), (22, "stop-docker-leader"), (34, "cont-docker-leader"),
                   (38, "stop-local-leader"), (48, "cont-local-leader"), (42, "postgres")]
            )  # fmt: skip
            stopped: dict[str, object] = {}
            revive = None
            for second, fault in schedule:
                await at(second)
                moment = time.monotonic()
                if fault == "redis":
                    old = t.redis.master_port
                    faults.append(("SIGKILL the Redis master", moment))
                    redis_killed_at[0] = time.time()  # the agents' logs are stamped in wall-clock time
                    await asyncio.to_thread(t.redis.kill_master)
                    figures["Redis master SIGKILL -> replica promoted by the Sentinels, s"] = time.monotonic() - moment
                    revive = asyncio.ensure_future(asyncio.to_thread(t.redis.revive, old))
                elif fault == "revive-redis":
                    await revive
                elif fault.startswith("stop-"):
                    platform = fault.split("-")[1]
                    process = await leader_process(platform)
                    process.signal(signal.SIGSTOP)
                    stopped[platform] = process
                    faults.append((f"SIGSTOP {platform} leader {process.instance_id}", moment))
                    new = await until(
                        lambda p=platform, old=process.instance_id: asyncio.to_thread(
                            lambda: (t.leader(ids[p]) or old) != old and t.leader(ids[p])
                        ),
                        timeout=30,
                        what=f"a new {platform} leader",
                    )
                    figures[f"{platform} leader failover (SIGSTOP -> new leader seen), s"] = time.monotonic() - moment
                    assert new != process.instance_id
                elif fault.startswith("cont-"):
                    stopped.pop(fault.split("-")[1]).signal(signal.SIGCONT)  # type: ignore[attr-defined]
                elif fault == "postgres":
                    faults.append(("restart postgres (immediate)", moment))
                    await asyncio.to_thread(t.pg.restart, "immediate")
                    figures["postgres restart, s"] = time.monotonic() - moment

        async def kill_replicas() -> None:
            """SIGKILL one replica after the other (restarted at once), the next one
            ``REPLICA_KILL_GAP_S`` after the last is listening again: one replica down at a time."""
            took: list[float] = []
            await asyncio.sleep(4)
            n = 0
            while time.monotonic() < stop_at - 8:
                replica = t.replicas[n % len(t.replicas)]
                n += 1
                moment = time.monotonic()
                t.kill_replica(replica)
                faults.append((f"SIGKILL {replica.name}", moment))
                t.start_replica(replica)
                took.append(await _listening_after(replica.port, moment))
                await asyncio.sleep(REPLICA_KILL_GAP_S)
            figures["control-plane replica SIGKILL -> listening again, median s"] = sorted(took)[len(took) // 2]
            figures["control-plane replica SIGKILL -> listening again, max s"] = max(took)
            figures["control-plane replicas killed"] = len(took)

        tasks = [
            kill_replicas(),
            stream.run(0, stop_at, MAX_SESSIONS),
            stream.run(1, stop_at, MAX_SESSIONS),
            probe.run(stop_at),
            viewer.run(stop_at + 10),
            sample_quota(),
            chaos(),
        ]
        await asyncio.gather(*tasks)

        # --- settle ---------------------------------------------------------------------------
        for agent in t.agents.values():
            agent.signal(signal.SIGCONT)
        listed = await until(lambda: _all_sessions(api), timeout=30, what="the session list")
        adopted = [session["id"] for session in listed if session["id"] not in ledger.target]
        for sid in adopted:
            ledger.target[sid] = "running"  # launched, its answer lost: the launch is its last request
        settle_began = time.monotonic()

        async def settled():
            current = {s["id"]: s for s in await _all_sessions(api) or []}
            wrong = {
                sid: (current.get(sid, {}).get("state"), target)
                for sid, target in ledger.target.items()
                if not _reached(current.get(sid), target)
            }
            return not wrong or None if current else None

        try:
            await until(settled, timeout=SETTLE_S, interval=1, what="every session in its target state")
        except TimeoutError:
            current = {s["id"]: s for s in await _all_sessions(api) or []}
            wrong = {
                sid: (current.get(sid, {}).get("state"), current.get(sid, {}).get("status_message"), target)
                for sid, target in ledger.target.items()
                if not _reached(current.get(sid), target)
            }
            rows = t.query(
                "SELECT session_id::text, action, state, attempts, instance_id, created_at, sent_at, acked_at,"
                " completed_at, error FROM agents_app_agentcommand WHERE session_id::text = ANY(%s) ORDER BY created_at",
                list(wrong),
            )
            periods = t.query(
                "SELECT session_id::text, state, started_at FROM sessions_app_sessionperiod"
                " WHERE session_id::text = ANY(%s) ORDER BY started_at",
                list(wrong),
            )
            pytest.fail(
                f"sessions not in their last accepted request's state (actual, message, target): {wrong}\n"
                f"their commands: {rows}\ntheir states: {periods}\nfaults: {faults}"
            )
        settle_s = time.monotonic() - settle_began

    # --- checks -----------------------------------------------------------------------------
    # No command ran twice, by the agents' logs and by the command rows.
    ran = executions(a.log_path for a in t.agents.values())
    assert ran, "the agents logged no executed command"
    twice = {cid: count for cid, count in ran.items() if count > 1}
    assert not twice, f"commands executed more than once: {twice}"
    commands = t.query("SELECT id::text, state, attempts FROM agents_app_agentcommand")
    superseded = t.query("SELECT count(*) FROM agents_app_agentcommand WHERE error LIKE 'superseded%%'")[0][0]
    undelivered = [row for row in commands if row[1] in ("pending", "sent")]
    assert not undelivered, f"commands that never reached an agent: {undelivered}"
    retried = sum(1 for _, _, attempts in commands if attempts > 1)
    results_lost = sum(1 for _, state, _ in commands if state == "acked")

    # No orphans: containers and local processes belong to sessions meant to hold them.
    rows = t.query(
        "SELECT s.id::text, s.state, t.platform FROM sessions_app_session s"
        " JOIN sessions_app_template t ON t.id = s.template_id"
    )
    states = {sid: state for sid, state, _ in rows}
    platform = {sid: kind for sid, _, kind in rows}
    for container in docker_client.containers.list(
        all=True, filters={"label": f"streamspace.managed-by={ids['docker']}"}
    ):
        sid = container.labels["streamspace.session-id"]
        assert states.get(sid) in ("running", "hibernated"), f"orphan container {container.name} ({states.get(sid)})"
        assert (container.status == "running") == (states[sid] == "running"), (container.name, container.status)
    wanted_local = {sid for sid, state in states.items() if state == "running" and platform[sid] == "local"}
    local_processes = _local_session_processes(t.root / "agent-local")
    assert set(local_processes) == wanted_local, (
        f"local processes {local_processes} for running sessions {wanted_local}"
    )
    running_docker = {sid for sid, state in states.items() if state == "running" and platform[sid] == "docker"}
    live_containers = {
        c.labels["streamspace.session-id"]
        for c in docker_client.containers.list(filters={"label": f"streamspace.managed-by={ids['docker']}"})
    }
    assert running_docker <= live_containers

    # The quota was never exceeded (sampled every 0.3 s; and the reconcile job found no drift).
    assert 0 < quota_peak[0] <= MAX_SESSIONS, quota_peak
    audit = t.query("SELECT table_name FROM information_schema.tables WHERE table_name LIKE '%%auditevent'")
    assert audit and not t.query(f"SELECT 1 FROM {audit[0][0]} WHERE action = 'quota.drift'")

    # The viewer's stream resumed within the target after every interruption.
    assert viewer.echoes > 100
    assert viewer.longest <= VIEWER_RESUME_TARGET_S, viewer.outages

    # --- figures ----------------------------------------------------------------------------
    gaps = [g for a in t.agents.values() for g in reconnects(a.log_path)]
    sockets = dict(
        t.query("SELECT pod, count(*) FROM agents_app_agentinstance WHERE connected GROUP BY pod ORDER BY pod")
    )
    lines = [
        f"setup {setup_s:.1f} s, run {RUN_S:.0f} s, settle {settle_s:.1f} s (bound {SETTLE_S:.0f} s)",
        f"requests: {dict(sorted((f'{r}:{o}', n) for (r, o), n in ledger.outcomes.items()))}",
        f"refusals: {dict(ledger.refusals)}; launches with a lost answer: {ledger.lost_launches}, "
        f"sessions found only in the list afterwards: {len(adopted)}",
        f"sessions: {len(ledger.target)}; quota peak {quota_peak[0]}/{MAX_SESSIONS}",
        f"commands: {len(commands)} rows, {sum(ran.values())} executions, {retried} re-sent (attempts > 1), "
        f"{results_lost} acked whose result never arrived, {superseded} superseded before they were sent",
        f"agent reconnects through nginx: {len(gaps)}, p50 {percentile(gaps, 50):.2f} s, "
        f"p99 {percentile(gaps, 99):.2f} s; agent sockets per replica at the end: {sockets}",
        f"viewer: {viewer.echoes} echoes, {viewer.connects} connections, outages "
        + ", ".join(f"{s:.2f}" for _, s in viewer.outages)
        + f" s (longest {viewer.longest:.2f} s, target {VIEWER_RESUME_TARGET_S:.0f} s)",
    ]
    for name, value in figures.items():
        lines.append(f"{name}: {value:.2f}")
    for platform in ("docker", "local"):
        logs = [a.log_path for name, a in t.agents.items() if name.startswith(platform)]
        gap = leaderless(logs, redis_killed_at[0], redis_killed_at[0] + 10)
        said = f"{gap:.2f} s" if gap is not None else "none (the leader kept its mandate)"
        lines.append(f"Redis master SIGKILL -> {platform} agent without a leader (Redis lease): {said}")
    lines.append(f"API probe: {len(probe.samples)} reads, failures by cause {dict(probe.reasons)}")
    for began, seconds in probe.failures():
        cause = max(((m, n) for n, m in faults if m <= began), default=(began, "no fault yet"))
        length = f"{seconds:.2f} s" if seconds != float("inf") else "until the probe stopped"
        lines.append(f"API failing {length} from {began - cause[0]:.1f} s after {cause[1]}")
    print("\n[chaos] " + "\n[chaos] ".join(lines))


async def _listening_after(port: int, since: float) -> float:
    """Seconds from ``since`` until something accepts connections on ``port``."""
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return time.monotonic() - since
        except OSError:
            await asyncio.sleep(0.1)


def _reached(session: dict | None, target: str) -> bool:
    if session is None:
        return False
    if target == "running":
        return session["state"] == "running" and session["streaming_ready"]
    return session["state"] == target


async def _all_sessions(api: httpx.AsyncClient) -> list[dict] | None:
    try:
        response = await api.get("/api/v1/sessions", params={"page_size": 500})
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    body = response.json()
    return body["results"] if isinstance(body, dict) else body


def _local_session_processes(data_dir: Path) -> dict[str, int]:
    """session id -> pid of every live process whose command line names a session home under
    ``data_dir`` (the local backend's per-session homes)."""
    found: dict[str, int] = {}
    homes = str(data_dir)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        if "State:\tZ" in status:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if "agent_runtime.demo_app" in args and "--home" in args:
            home = args[args.index("--home") + 1]
            if home.startswith(homes):
                found[Path(home).parent.name] = int(entry.name)
    return found

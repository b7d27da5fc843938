"""Agent benchmarks: HA failover time per lease backend, and the agent's session-start overhead.

    .venv/bin/python bench/agent_bench.py [--runs 10] [--defaults] [--starts 10] [--swarm]

Failover: two real ``streamspace-agent`` processes (local backend) of one agent connect to a
fake control plane (a websockets server in this process); the leader is killed with SIGKILL
and we time kill → the follower's ``leader`` (is_leader=true) frame, then → the first command
executed by it. LEASE_DURATION=3s, RENEW_DEADLINE=2s, RETRY_PERIOD=500ms unless --defaults
(15s/10s/2s, one run each). Redis: REDIS_URL (default redis://127.0.0.1:6379/14). Kubernetes:
the ``coordination.k8s.io/v1`` Lease on the API emulator (tests/support/kube_api.py) in this
process; from the Lease's stored versions each run also checks that the old leader's mandate
(its last renewal + RENEW_DEADLINE) ended before the new leader's first write, i.e. that two
leaders never acted at once, and reports the smallest such gap.
``--swarm`` adds the Swarm lease's row (kill -9 and SIGSTOP, ``bench/swarm_bench.py``); it
makes the engine a single-node Swarm manager for the run if it is not one.

Start overhead: an in-process agent with the Docker backend and the local test image
(``tests/images/build.sh``); per ``start_session`` we time command sent → ``ack`` →
``result`` (container created and started) → ``session_status`` with ``streaming_ready``,
and compare with the Docker SDK's own create+start of the same container config.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_runtime.backends.base import SessionSpec  # noqa: E402
from agent_runtime.backends.docker import DockerBackend  # noqa: E402
from agent_runtime.backends.docker_objects import container_config  # noqa: E402
from agent_runtime.config import AgentConfig, parse_duration  # noqa: E402
from agent_runtime.connection import AgentConnection  # noqa: E402
from agent_runtime.leader import AlwaysLeader  # noqa: E402
from tests.support.fakes import FakeControlPlane  # noqa: E402
from tests.support.kube_api import KubeAPI  # noqa: E402
from tests.support.processes import spawn_agent  # noqa: E402

FAST = {"LEASE_DURATION": "3s", "RENEW_DEADLINE": "2s", "RETRY_PERIOD": "500ms"}
DEFAULTS = {"LEASE_DURATION": "15s", "RENEW_DEADLINE": "10s", "RETRY_PERIOD": "2s"}
IMAGE = "streamspace-test-session:latest"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def leading(link) -> bool:
    state = link.register.is_leader if link.register else False
    for frame in link.frames:
        if frame.type in ("leader", "heartbeat"):
            state = frame.payload.is_leader
    return state


def link_of(cp, instance_id):
    links = [link for link in cp.links if link.register.instance_id == instance_id]
    return links[-1] if links else None


def lease_gap(kube: KubeAPI, key: str, renew_deadline: float) -> float:
    """Seconds between the end of a's last mandate and b's first write of the Lease (> 0: never
    two leaders at once)."""
    from datetime import datetime

    with kube.cond:
        writes = [
            (
                datetime.fromisoformat(obj["spec"]["renewTime"].replace("Z", "+00:00")).timestamp(),
                obj["spec"].get("holderIdentity"),
            )
            for _, resource, _, kind, obj in kube.events
            if resource == "leases" and obj["metadata"]["name"] == key and kind != "DELETED"
        ]
    last_a = max(t for t, holder in writes if holder == "a")
    first_b = min(t for t, holder in writes if holder == "b")
    return first_b - (last_a + renew_deadline)


async def failover_once(
    backend: str, timings: dict[str, str], workdir: Path, redis_url: str, gaps: list[float]
) -> tuple[float, float]:
    cp = FakeControlPlane(heartbeat_interval_s=1.0)
    await cp.start()
    key = f"bench-{secrets.token_hex(4)}"
    env = {"ENABLE_HA": "true", "HA_BACKEND": backend, "LEASE_KEY": key, **timings}
    env["FILE_LOCK_PATH"] = str(workdir / "leader.lock")
    env["REDIS_URL"] = redis_url
    env["LOG_LEVEL"] = "warning"
    kube = None
    if backend == "kubernetes":
        kube = KubeAPI().start()
        env["KUBECONFIG"] = str(kube.write_kubeconfig(workdir / "kubeconfig"))
        env["LEASE_NAMESPACE"] = "bench"
    a = await spawn_agent(cp.url, cp.token, instance_id="a", data_dir=workdir / "a", env=env)
    b = None
    try:
        await cp.wait_for(lambda: (link := link_of(cp, "a")) and leading(link), timeout=60)
        b = await spawn_agent(cp.url, cp.token, instance_id="b", data_dir=workdir / "b", env=env)
        await cp.wait_for(lambda: link_of(cp, "b"), timeout=30)
        # kill at a random point of the renew cycle, as a crash would
        await asyncio.sleep(1.0 + secrets.randbelow(1000) / 1000 * parse_duration(timings["RETRY_PERIOD"]))
        killed = time.monotonic()
        a.signal(signal.SIGKILL)
        link_b = link_of(cp, "b")
        await cp.wait_for(lambda: leading(link_b), timeout=60)
        took_over = time.monotonic() - killed
        cid = await link_b.command("stop_session", "bench", {})
        await cp.wait_result(cid, timeout=30)
        acted = time.monotonic() - killed
        if kube is not None:
            gap = lease_gap(kube, key, parse_duration(timings["RENEW_DEADLINE"]))
            assert gap > 0, f"two leaders could act at once ({gap:.3f} s)"
            gaps.append(gap)
        return took_over, acted
    finally:
        await a.stop()
        if b is not None:
            await b.stop()
        await cp.stop()
        if kube is not None:
            kube.stop()


async def bench_failover(runs: int, defaults: bool, redis_url: str, backends: list[str]) -> None:
    print(f"## failover (kill -9 of the leader), {runs} runs each")
    for label, timings, n in [("LEASE_DURATION=3s RENEW_DEADLINE=2s RETRY_PERIOD=500ms", FAST, runs)] + (
        [("defaults 15s/10s/2s", DEFAULTS, 1)] if defaults else []
    ):
        for backend in backends:
            takeovers, actions, gaps = [], [], []
            for _ in range(n):
                with tempfile.TemporaryDirectory() as tmp:
                    took_over, acted = await failover_once(backend, timings, Path(tmp), redis_url, gaps)
                takeovers.append(took_over)
                actions.append(acted)
            never_two = f"; old mandate ended >= {min(gaps):.2f} s before the takeover" if gaps else ""
            print(
                f"{backend:5} {label}: takeover p50 {statistics.median(takeovers):.2f} s "
                f"(min {min(takeovers):.2f}, max {max(takeovers):.2f}); first command executed p50 "
                f"{statistics.median(actions):.2f} s{never_two}  [n={n}]",
                flush=True,
            )


async def bench_start(starts: int) -> None:
    import docker

    client = docker.from_env()
    agent_id = f"bench-{secrets.token_hex(3)}"
    spec = {"image": IMAGE, "user": agent_id, "template": "bench", "cpu_millicores": 250, "memory_mb": 64,
            "persistent_home": False}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        backend = DockerBackend(agent_id=agent_id, data_dir=Path(tmp), options={"pull": "never", "stop_timeout": "2"})
        async with FakeControlPlane(heartbeat_interval_s=30) as cp:
            config = AgentConfig(control_plane=cp.url, token=cp.token, agent_id=agent_id, platform="docker",
                                 instance_id="bench", data_dir=Path(tmp))  # fmt: skip
            connection = AgentConnection(config, backend, AlwaysLeader())
            task = asyncio.create_task(connection.run())
            link = await cp.link()
            to_ack, to_result, to_ready = [], [], []
            try:
                for i in range(starts):
                    sid = f"bench-{i}"
                    sent = time.monotonic()
                    cid = await link.command("start_session", sid, spec)
                    await cp.wait_for(lambda cid=cid: any(f.payload.command_id == cid for f in link.of_type("ack")))
                    acked = time.monotonic()
                    await cp.wait_result(cid, timeout=60)
                    done = time.monotonic()
                    await cp.wait_for(
                        lambda sid=sid: any(
                            f.payload.session_id == sid and f.payload.streaming_ready
                            for f in link.of_type("session_status")
                        ),
                        timeout=60,
                    )
                    ready = time.monotonic()
                    to_ack.append(acked - sent)
                    to_result.append(done - sent)
                    to_ready.append(ready - sent)
                    stop = await link.command("stop_session", sid, {})
                    await cp.wait_result(stop, timeout=60)
            finally:
                await connection.shutdown(5)
                task.cancel()
                await backend.close()
        # the engine's own cost for the same container config, without the agent
        raw = []
        cfg_spec = SessionSpec.parse(spec)
        for i in range(starts):
            cfg = container_config(f"raw-{agent_id}-{i}", cfg_spec, agent_id=agent_id)
            started = time.monotonic()
            container = client.containers.create(**cfg)
            container.start()
            raw.append(time.monotonic() - started)
            container.remove(force=True)
    for c in client.containers.list(all=True, filters={"label": f"streamspace.managed-by={agent_id}"}):
        c.remove(force=True)

    def ms(values):
        return f"p50 {statistics.median(values) * 1000:.0f} ms, p95 {pct(values, 0.95) * 1000:.0f} ms"

    print(f"## session start (docker backend, {starts} starts)")
    print(f"command sent → ack: {ms(to_ack)}")
    print(f"command sent → result (container started): {ms(to_result)}")
    print(f"command sent → streaming_ready reported: {ms(to_ready)}")
    print(f"docker SDK create+start alone: {ms(raw)}")
    overhead = statistics.median(to_result) - statistics.median(raw)
    print(f"agent overhead over the engine (p50 difference): {overhead * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--defaults", action="store_true", help="also one run per backend at 15s/10s/2s")
    parser.add_argument("--swarm", action="store_true", help="also the Swarm lease (HA_BACKEND=swarm)")
    parser.add_argument("--skip-failover", action="store_true")
    parser.add_argument("--lease-backends", default="file,redis,kubernetes", help="comma-separated HA_BACKEND values")
    parser.add_argument("--skip-start", action="store_true")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    if not args.skip_failover:
        backends = [b.strip() for b in args.lease_backends.split(",") if b.strip()]
        asyncio.run(bench_failover(args.runs, args.defaults, args.redis_url, backends))
    if args.swarm:
        from swarm_bench import bench_swarm_failover

        label = "LEASE_DURATION=3s RENEW_DEADLINE=2s RETRY_PERIOD=500ms"
        asyncio.run(bench_swarm_failover(args.runs, FAST, label))
        if args.defaults:
            asyncio.run(bench_swarm_failover(1, DEFAULTS, "defaults 15s/10s/2s"))
    if not args.skip_start:
        asyncio.run(bench_start(args.starts))


if __name__ == "__main__":
    main()

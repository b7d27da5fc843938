"""The Swarm lease's failover (``HA_BACKEND=swarm``), run by ``bench/agent_bench.py --swarm``.

Two real ``streamspace-agent`` processes (local backend) of one agent elect on a Swarm lease
record; the engine is made a single-node Swarm manager for the run when it is not one (and
leaves the swarm afterwards). Per run:

* **kill**: the leader is killed with SIGKILL at a random point of its renew cycle; we time
  kill → the follower's ``leader`` (is_leader=true) frame and → its first executed command.
* **pause**: the leader is stopped with SIGSTOP; we time stop → the follower's ``leader``
  frame (its ``ts``, the agent's own clock), which must come after the paused leader's
  mandate ended (at most RENEW_DEADLINE after its last renew, which began before the
  pause); after SIGCONT the old leader must announce is_leader=false and execute nothing.
  A run where both could have acted at once is counted as an overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import statistics
import tempfile
import time
from pathlib import Path

import docker
import docker.errors

from agent_runtime.config import parse_duration
from agent_runtime.leader.swarm import lease_service_name
from tests.support.fakes import FakeControlPlane
from tests.support.processes import spawn_agent


def leading(link) -> bool:
    state = link.register.is_leader if link.register else False
    for frame in link.frames:
        if frame.type in ("leader", "heartbeat"):
            state = frame.payload.is_leader
    return state


def link_of(cp, instance_id):
    links = [link for link in cp.links if link.register.instance_id == instance_id]
    return links[-1] if links else None


@contextlib.contextmanager
def swarm_engine():
    """The local engine as a Swarm manager for the duration of the block."""
    client = docker.from_env()
    initialised = False
    if (client.info().get("Swarm") or {}).get("LocalNodeState") != "active":
        client.swarm.init(advertise_addr="127.0.0.1")
        initialised = True
    try:
        yield client
    finally:
        if initialised:
            client.swarm.leave(force=True)
        client.close()


async def _pair(cp, timings: dict[str, str], workdir: Path, key: str):
    env = {"ENABLE_HA": "true", "HA_BACKEND": "swarm", "LEASE_KEY": key, "LOG_LEVEL": "warning", **timings}
    a = await spawn_agent(cp.url, cp.token, instance_id="a", data_dir=workdir / "a", env=env)
    await cp.wait_for(lambda: (link := link_of(cp, "a")) and leading(link), timeout=60)
    b = await spawn_agent(cp.url, cp.token, instance_id="b", data_dir=workdir / "b", env=env)
    await cp.wait_for(lambda: link_of(cp, "b"), timeout=30)
    return a, b


async def run_once(client, timings: dict[str, str], *, pause: bool) -> dict[str, float | bool]:
    key = f"bench-swarm-{secrets.token_hex(4)}"
    cp = FakeControlPlane(heartbeat_interval_s=1.0)
    await cp.start()
    a = b = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            a, b = await _pair(cp, timings, Path(tmp), key)
            await asyncio.sleep(1.0 + secrets.randbelow(1000) / 1000 * parse_duration(timings["RETRY_PERIOD"]))
            link_a, link_b = link_of(cp, "a"), link_of(cp, "b")
            hit_wall, hit = time.time(), time.monotonic()
            a.signal(signal.SIGSTOP if pause else signal.SIGKILL)
            await cp.wait_for(lambda: leading(link_b), timeout=60)
            took_over = time.monotonic() - hit
            first = next(f for f in link_b.frames if f.type == "leader" and f.payload.is_leader)
            cid = await link_b.command("stop_session", "bench", {})
            await cp.wait_result(cid, timeout=30)
            acted = time.monotonic() - hit
            result: dict[str, float | bool] = {"took_over": took_over, "acted": acted}
            if pause:
                deadline = parse_duration(timings["RENEW_DEADLINE"])
                overlap = first.ts - hit_wall < deadline
                stale = await link_a.command("stop_session", "bench-stale", {})
                before = len(link_a.frames)
                a.signal(signal.SIGCONT)
                await cp.wait_for(
                    lambda: any(f.type == "leader" and not f.payload.is_leader for f in link_a.frames[before:]),
                    timeout=30,
                )
                await asyncio.sleep(1.0)
                acted_stale = any(f.type in ("ack", "result") and f.payload.command_id == stale for f in link_a.frames)
                result["overlap"] = overlap or acted_stale
            return result
    finally:
        for proc in (a, b):
            if proc is not None:
                await proc.stop()
        await cp.stop()
        with contextlib.suppress(docker.errors.NotFound):
            client.services.get(lease_service_name(key)).remove()


async def bench_swarm_failover(runs: int, timings: dict[str, str], label: str) -> None:
    with swarm_engine() as client:
        kills = [await run_once(client, timings, pause=False) for _ in range(runs)]
        pauses = [await run_once(client, timings, pause=True) for _ in range(runs)]
    takeovers = [r["took_over"] for r in kills]
    actions = [r["acted"] for r in kills]
    paused = [r["took_over"] for r in pauses]
    overlaps = sum(1 for r in pauses if r["overlap"])
    print(
        f"swarm {label}: kill -9 takeover p50 {statistics.median(takeovers):.2f} s "
        f"(min {min(takeovers):.2f}, max {max(takeovers):.2f}); first command executed p50 "
        f"{statistics.median(actions):.2f} s  [n={runs}]",
        flush=True,
    )
    print(
        f"swarm {label}: SIGSTOP takeover p50 {statistics.median(paused):.2f} s "
        f"(min {min(paused):.2f}, max {max(paused):.2f}); runs where two leaders could act at once: "
        f"{overlaps}/{runs}",
        flush=True,
    )

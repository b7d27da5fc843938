"""Agent hub at scale: N simulated agents on one daphne, and command round trips.

    .venv/bin/python bench/hub_bench.py [--agents 1000] [--measure-seconds 60] [--commands 200]

Two daphne replicas (A, B) share PostgreSQL and Redis. A (all the agents) is pinned to CPU 0,
B to CPU 1, as replicas on separate nodes would be; the simulated agents and the load
generator run on CPU 1 (``--same-core`` pins both replicas to CPU 0). All agents connect to A and heartbeat every 10 s
(staggered). Reported: A's CPU share and RSS while idle-heartbeating, then the command round
trip (POST /api/v1/sessions → agent receives start_session → agent's result applied) with
the API call on A (same replica) and on B (cross replica).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import statistics
import time
import uuid

import httpx
import websockets
from common import bench_env, daphne, manage_shell, reset_database

DB = "streamspace_hubbench"

SETUP = """
from streamspace.accounts.models import User
from sessions_app.models import Template, UserQuota
from agents_app.models import Agent
from agents_app.tokens import hash_token
u = User.objects.create_user('bench', password='bench-password')
UserQuota.objects.create(user=u, max_sessions=10**6, max_cpu_millicores=10**9, max_memory_mb=10**9)
Template.objects.create(slug='bench', display_name='Bench', image='registry.local/bench:1', platform='docker')
rows = []
for i in range({n}):
    rows.append(Agent(agent_id=f'sim-{i}', platform='local', token_hash=hash_token(f'sim-token-{i}')))
Agent.objects.bulk_create(rows)
Agent.objects.create(agent_id='worker', platform='docker', token_hash=hash_token('worker-token'))
"""


def frame(type_: str, **payload) -> str:
    return json.dumps({"type": type_, "id": uuid.uuid4().hex, "ts": time.time(), "payload": payload})


def register(agent_id: str, platform: str) -> str:
    return frame(
        "register",
        agent_id=agent_id,
        instance_id=f"{agent_id}-0",
        platform=platform,
        version="bench",
        hostname="bench",
        is_leader=True,
        capacity={"cpu_millicores": 4000, "memory_mb": 8192, "sessions": 10},
        sessions=[],
    )


RETRIES = {"count": 0}


async def simulated_agent(ws_url: str, index: int, stop: asyncio.Event, ready: asyncio.Queue) -> None:
    """Register, then heartbeat every 10 s; like the real agent, retry a refused handshake."""
    delay = 0.5
    while True:
        try:
            async with websockets.connect(
                ws_url,
                additional_headers={"Authorization": f"Bearer sim-token-{index}"},
                max_size=2**20,
                open_timeout=60,
            ) as ws:
                await ws.send(register(f"sim-{index}", "local"))
                json.loads(await ws.recv())
                await ready.put(index)
                await asyncio.sleep(random.uniform(0, 10))
                while not stop.is_set():
                    await ws.send(frame("heartbeat", is_leader=True, active_sessions=0))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 10)
                return
        except (OSError, websockets.InvalidHandshake, websockets.ConnectionClosed):
            if stop.is_set():
                return
            RETRIES["count"] += 1
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, 30)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def round_trips(api: str, token: str, worker_url: str, count: int) -> dict[str, list[float]]:
    """Run ``count`` launches through ``api`` with the worker agent answering each command."""
    out = {"deliver": [], "apply": [], "total": [], "ids": [], "wall_delivered": [], "wall_applied": []}
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        websockets.connect(worker_url, additional_headers={"Authorization": "Bearer worker-token"}) as ws,
        httpx.AsyncClient(base_url=api, headers=headers, timeout=30) as client,
    ):
        await ws.send(register("worker", "docker"))
        json.loads(await ws.recv())
        for _ in range(count):
            start = time.perf_counter()
            post = asyncio.ensure_future(client.post("/api/v1/sessions", json={"template": "bench"}))
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "command":
                    break
            delivered, wall_delivered = time.perf_counter(), time.time()
            cmd = message["payload"]
            await ws.send(frame("ack", command_id=cmd["command_id"]))
            await ws.send(
                frame(
                    "session_status",
                    session_id=cmd["session_id"],
                    state="running",
                    streaming_ready=True,
                    streaming_port=8080,
                    endpoint="127.0.0.1:9",
                )
            )
            await ws.send(frame("result", command_id=cmd["command_id"], ok=True))
            sent = time.perf_counter()
            await ws.send(frame("session_status", session_id="barrier", state="running"))
            while json.loads(await ws.recv())["type"] != "error":
                pass
            applied, wall_applied = time.perf_counter(), time.time()
            response = await post
            assert response.status_code == 202, response.text
            out["deliver"].append(delivered - start)
            out["apply"].append(applied - sent)
            out["total"].append(applied - start)
            out["ids"].append(cmd["command_id"])
            out["wall_delivered"].append(wall_delivered)
            out["wall_applied"].append(wall_applied)
    return out


def command_times(env: dict[str, str], result: dict[str, list]) -> tuple[list[float], list[float]]:
    """From each command's creation (its row's ``created_at``, written by replica B's clock,
    which is this machine's) to the agent receiving it, and to its result being applied."""
    import psycopg

    with psycopg.connect(env["DATABASE_URL"]) as conn:
        rows = dict(
            conn.execute(
                "SELECT id::text, extract(epoch FROM created_at) FROM agents_app_agentcommand WHERE id::text = ANY(%s)",
                [result["ids"]],
            ).fetchall()
        )
    created = [float(rows[i]) for i in result["ids"]]
    deliver = [d - c for d, c in zip(result["wall_delivered"], created, strict=True)]
    applied = [a - c for a, c in zip(result["wall_applied"], created, strict=True)]
    return deliver, applied


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] * 1000


async def main_async(args: argparse.Namespace) -> None:
    env = bench_env(DB, redis_db=13)
    env["AGENT_HEARTBEAT_INTERVAL_S"] = "10"
    reset_database(env, DB)
    manage_shell(env, SETUP.replace("{n}", str(args.agents)))
    cpu_b = 0 if args.same_core else 1
    with daphne(env, cpu=0) as (base_a, proc_a), daphne(env, cpu=cpu_b) as (base_b, proc_b):
        ws_a = base_a.replace("http", "ws") + "/api/v1/agents/connect"
        stop, ready = asyncio.Event(), asyncio.Queue()
        started = time.monotonic()
        tasks = []
        for i in range(args.agents):
            tasks.append(asyncio.ensure_future(simulated_agent(ws_a, i, stop, ready)))
            if i % 50 == 49:
                await asyncio.sleep(0.05)
        for n in range(args.agents):
            await asyncio.wait_for(ready.get(), 600)
            if n % 100 == 99:
                print(f"  {n + 1} registered after {time.monotonic() - started:.1f} s", flush=True)
        print(
            f"{args.agents} agents registered on replica A in {time.monotonic() - started:.1f} s "
            f"({RETRIES['count']} handshakes retried after daphne's 5 s connect timeout)"
        )
        await asyncio.sleep(12)  # every agent past its first heartbeat
        cpu0, rss0, t0 = cpu_seconds(proc_a.pid), rss_mib(proc_a.pid), time.monotonic()
        await asyncio.sleep(args.measure_seconds)
        cpu1, rss1, t1 = cpu_seconds(proc_a.pid), rss_mib(proc_a.pid), time.monotonic()
        share = (cpu1 - cpu0) / (t1 - t0) * 100
        print(
            f"replica A, {args.agents} agents heartbeating every 10 s: CPU {share:.1f} % of a core "
            f"over {t1 - t0:.0f} s, RSS {rss1:.0f} MiB (was {rss0:.0f} MiB)"
        )

        token = httpx.post(
            base_a + "/api/v1/auth/login", json={"username": "bench", "password": "bench-password"}
        ).json()["access"]
        for label, api in (("same replica (API on A)", base_a), ("cross replica (API on B)", base_b)):
            cpu_a0, cpu_b0 = cpu_seconds(proc_a.pid), cpu_seconds(proc_b.pid)
            result = await round_trips(api, token, ws_a, args.commands)
            cpu_a = (cpu_seconds(proc_a.pid) - cpu_a0) / args.commands * 1000
            cpu_b = (cpu_seconds(proc_b.pid) - cpu_b0) / args.commands * 1000
            print(
                f"{label}: create→agent p50 {pct(result['deliver'], 0.5):.1f} ms p99 "
                f"{pct(result['deliver'], 0.99):.1f} ms | result→applied p50 {pct(result['apply'], 0.5):.1f} ms "
                f"p99 {pct(result['apply'], 0.99):.1f} ms | total p50 {pct(result['total'], 0.5):.1f} ms "
                f"p99 {pct(result['total'], 0.99):.1f} ms (n={args.commands}, "
                f"mean {statistics.mean(result['total']) * 1000:.1f} ms, p90 {pct(result['total'], 0.9):.1f} ms, "
                f"max {max(result['total']) * 1000:.1f} ms); CPU a round trip: "
                f"A {cpu_a:.1f} ms, B {cpu_b:.1f} ms"
            )
            deliver, applied = command_times(env, result)
            print(
                f"  command created→agent p50 {pct(deliver, 0.5):.1f} ms p99 {pct(deliver, 0.99):.1f} ms | "
                f"command created→result applied p50 {pct(applied, 0.5):.1f} ms p99 {pct(applied, 0.99):.1f} ms "
                f"(max {max(applied) * 1000:.1f} ms)"
            )
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--measure-seconds", type=float, default=60)
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--same-core", action="store_true", help="pin both replicas to CPU 0")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    os.sched_setaffinity(0, {1})
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()

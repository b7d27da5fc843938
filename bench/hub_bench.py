"""Agent hub at scale: N simulated agents on one daphne, and command round trips.

    .venv/bin/python bench/hub_bench.py [--agents 1000] [--measure-seconds 60] [--commands 200]
    .venv/bin/python bench/hub_bench.py --herd [--agents 1000] [--first-delay 0]

``--herd`` measures the reconnect herd instead (docs/architecture.md §13.2): N agents
register on replica A, A is killed (SIGKILL) and every agent reconnects to replica B at
once (``--first-delay S``: each first waits a uniform [0, S] s, the agent's first backoff).
Both replicas are pinned to CPU 0 (A is dead before the herd reaches B), the agents run on
CPU 1. Reported per agent, from its reconnect attempt to the hub's ``registered`` frame:
p50 / p99 / max, handshakes dropped (refused, reset or timed out) and retried, and B's CPU.
``--trace`` runs B as ``bench/traced_hub_serve.py`` and prints each agent's way through the
herd (``STAGES``: the agent's own timestamps and B's, on one monotonic clock): first /
median / last per stage over all agents, and the median of the first tenth to register.
The simulated agents share one process and one core: their own work (connecting, writing
the handshake) is part of what they measure, which real agents on their own hosts do not
share; ``connected`` and ``head_sent`` show it.

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
import signal
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import websockets
from common import ROOT, bench_env, daphne, manage_shell, reset_database
from websockets.asyncio.client import ClientConnection

DB = "streamspace_hubbench"
REDIS_DB = 13

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
        capacity={"cpu_millicores": 4000, "memory_mb": 8192, "sessions": 0},  # no session limit
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


# --- the reconnect herd ---------------------------------------------------------------------
class TracedConnection(ClientConnection):
    """websockets' client connection, noting when its TCP connection was made and when it
    wrote its handshake request (``time.monotonic()``), for ``--trace``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.bench_times = {"connected": time.monotonic()}
        super().connection_made(transport)

    async def handshake(self, *args, **kwargs) -> None:
        self.bench_times["head_sent"] = time.monotonic()  # the request is written before the first await
        await super().handshake(*args, **kwargs)


class HerdAgent:
    """A simulated agent that registers on ``urls[0]`` and, once that socket dies, reconnects
    to ``urls[1]``: like the real agent (agent_runtime/connection.py) it times a handshake
    out after 10 s, waits for ``registered`` up to 10 s and retries with full-jitter backoff."""

    def __init__(self, index: int, urls: list[str], first_delay: float) -> None:
        self.index, self.urls, self.first_delay = index, urls, first_delay
        self.registered = [asyncio.Event(), asyncio.Event()]
        self.reconnect_started = 0.0
        self.reconnect_seconds: float | None = None
        # --trace: time.monotonic() when the socket to A was seen closed, when the reconnect
        # began, when B's handshake completed (101 seen) and when ``registered`` arrived.
        self.times: dict[str, float] = {}
        self.dropped: list[str] = []  # why each failed attempt on the second replica failed

    async def run(self, stop: asyncio.Event) -> None:
        for phase, url in enumerate(self.urls):
            if phase:
                self.times["drop"] = time.monotonic()
                await asyncio.sleep(random.uniform(0, self.first_delay))
                self.reconnect_started = time.perf_counter()
                self.times["start"] = time.monotonic()
            attempt = 0
            while not stop.is_set():
                try:
                    async with websockets.connect(
                        url,
                        additional_headers={"Authorization": f"Bearer sim-token-{self.index}"},
                        max_size=2**20,
                        open_timeout=10,
                        ping_interval=None,
                        proxy=None,  # no proxy lookup in the environment per connection
                        create_connection=TracedConnection,
                    ) as ws:
                        opened = time.monotonic()
                        await ws.send(register(f"sim-{self.index}", "local"))
                        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                        if reply["type"] != "registered":  # e.g. register_timeout: retried like a drop
                            raise websockets.InvalidHandshake(reply["payload"]["code"])
                        if phase:
                            self.reconnect_seconds = time.perf_counter() - self.reconnect_started
                            self.times.update(ws.bench_times, open=opened, registered=time.monotonic())
                        self.registered[phase].set()
                        await self._heartbeat(ws, stop)
                        break
                except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.ConnectionClosed) as exc:
                    if self.registered[phase].is_set() or stop.is_set():
                        break  # the replica died under a registered socket: next phase
                    if phase:
                        self.dropped.append(
                            str(exc) if type(exc) is websockets.InvalidHandshake else type(exc).__name__
                        )
                    await asyncio.sleep(random.uniform(0, min(30.0, 0.5 * 2**attempt)))
                    attempt += 1

    @staticmethod
    async def _heartbeat(ws, stop: asyncio.Event) -> None:
        """Heartbeat every 10 s until ``stop``; return as soon as the socket closes (a killed
        replica's sockets are reset at once, and the real agent is reading them)."""
        stopping = asyncio.ensure_future(stop.wait())
        closed = asyncio.ensure_future(ws.wait_closed())
        try:
            delay = random.uniform(0, 10)
            while True:
                await asyncio.wait([stopping, closed], timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                if stopping.done() or closed.done():
                    return
                await ws.send(frame("heartbeat", is_leader=True, active_sessions=0))
                delay = 10
        finally:
            stopping.cancel()
            closed.cancel()


async def herd(args: argparse.Namespace, env: dict[str, str]) -> None:
    import redis

    client = redis.Redis.from_url(env["REDIS_URL"])
    for key in client.scan_iter("streamspace:agents:*"):  # a previous run's registry
        client.delete(key)
    client.close()
    trace_path = ROOT / ".streamspace" / f"herd-trace-{os.getpid()}.json"
    launcher = [str(ROOT / "bench" / "traced_hub_serve.py"), str(trace_path)] if args.trace else None
    with (
        daphne({**env, "POD_NAME": "herd-a"}, cpu=0) as (base_a, proc_a),
        daphne({**env, "POD_NAME": "herd-b"}, cpu=0, launcher=launcher) as (base_b, proc_b),
    ):
        urls = [base.replace("http", "ws") + "/api/v1/agents/connect" for base in (base_a, base_b)]
        agents = [HerdAgent(i, urls, args.first_delay) for i in range(args.agents)]
        stop = asyncio.Event()
        tasks = []
        for i, agent in enumerate(agents):
            tasks.append(asyncio.ensure_future(agent.run(stop)))
            if i % 50 == 49:
                await asyncio.sleep(0.05)
        for agent in agents:
            await asyncio.wait_for(agent.registered[0].wait(), 600)
        print(f"{args.agents} agents registered on replica A; SIGKILL A", flush=True)
        await asyncio.sleep(2)
        profiler = None
        if args.profile:  # py-spy (not a requirement: pip install py-spy) samples B through the herd
            cmd = ["py-spy", "record", "--format", "raw", "--rate", "250", "-o", args.profile, "-p", str(proc_b.pid)]
            profiler = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(1)
        cpu0, load0, overflows0 = cpu_seconds(proc_b.pid), os.getloadavg()[0], listen_overflows()
        own0 = time.process_time()
        killed, killed_monotonic = time.perf_counter(), time.monotonic()
        proc_a.kill()
        for agent in agents:
            await asyncio.wait_for(agent.registered[1].wait(), 600)
        wall = time.perf_counter() - killed
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
        cpu = cpu_seconds(proc_b.pid) - cpu0
        own = time.process_time() - own0
        times = [agent.reconnect_seconds for agent in agents]
        dropped = [why for agent in agents for why in agent.dropped]
        kinds = ", ".join(f"{why} {dropped.count(why)}" for why in sorted(set(dropped))) or "none"
        print(
            f"herd of {args.agents} (first delay U[0, {args.first_delay:g}] s) onto replica B: "
            f"reconnect → registered p10 {pct(times, 0.1) / 1000:.2f} s p25 {pct(times, 0.25) / 1000:.2f} s "
            f"p50 {pct(times, 0.5) / 1000:.2f} s p75 {pct(times, 0.75) / 1000:.2f} s p99 {pct(times, 0.99) / 1000:.2f} s "
            f"max {max(times):.2f} s; all in {wall:.2f} s after the kill; handshakes dropped and retried: "
            f"{len(dropped)} ({kinds}); B's CPU {cpu:.2f} s ({cpu / wall * 100:.0f} % of a core); "
            f"the simulated agents' CPU {own:.2f} s ({own / wall * 100:.0f} % of a core); "
            f"load average {load0:.2f} → {os.getloadavg()[0]:.2f}; listen queue overflows (whole machine) "
            f"{listen_overflows() - overflows0}",
            flush=True,
        )
        await check_registry(env, args.agents)
        if args.trace:
            print_trace(agents, await server_trace(proc_b, trace_path), killed_monotonic)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


async def server_trace(proc: subprocess.Popen, path: Path) -> dict[int, dict[str, float]]:
    """The traced replica's stages per agent (bench/traced_hub_serve.py writes them on SIGUSR1)."""
    path.unlink(missing_ok=True)
    proc.send_signal(signal.SIGUSR1)
    for _ in range(300):
        await asyncio.sleep(0.1)
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            data = json.loads(path.read_text())
            path.unlink()
            return {int(key): value for key, value in data.items()}
    raise RuntimeError("the traced replica wrote no trace")


# Each agent's way through the herd, in order: (stage, where it is timed, what it is).
STAGES = [
    ("drop", "agent", "socket to A seen closed"),
    ("start", "agent", "reconnect attempt begins"),
    ("connected", "agent", "TCP connected"),
    ("tcp", "B", "TCP accepted (front protocol made)"),
    ("head_sent", "agent", "handshake request written"),
    ("head", "B", "request head complete, asks admission"),
    ("admitted", "B", "admitted: to the hub socket (daphne before it)"),
    ("ws_connect", "B", "consumer connect() runs"),
    ("authed", "B", "token looked up, accept()"),
    ("open", "agent", "101 seen by the agent"),
    ("register_in", "B", "register frame in on_register"),
    ("db_start", "B", "its registration batch starts (DB thread)"),
    ("db_end", "B", "its registration batch committed"),
    ("redis_end", "B", "its registry pipeline done"),
    ("registered_sent", "B", "registered handed to the server"),
    ("registered", "agent", "registered received by the agent"),
]


def print_trace(agents: list[HerdAgent], server: dict[int, dict[str, float]], killed: float) -> None:
    """First / median / last time of each stage after the kill, over all agents, and the
    medians of the first tenth of the agents to register (where a herd's head waits)."""
    timelines = [{**server.get(agent.index, {}), **agent.times} for agent in agents]
    first = sorted(timelines, key=lambda t: t.get("registered", float("inf")))[: max(1, len(timelines) // 10)]
    print(
        "  timeline, seconds after the kill: first / median / last of all agents | median of the first 10 % registered"
    )
    for stage, where, what in STAGES:
        seen = sorted(t[stage] - killed for t in timelines if stage in t)
        early = sorted(t[stage] - killed for t in first if stage in t)
        if not seen:
            print(f"    {stage:<16}{where:<6} (not recorded) {what}")
            continue
        print(
            f"    {stage:<16}{where:<6}{seen[0]:6.3f} / {statistics.median(seen):6.3f} / {seen[-1]:6.3f} "
            f"| {statistics.median(early) if early else float('nan'):6.3f}  (n={len(seen)}) {what}"
        )


def listen_overflows() -> int:
    """The kernel's count of connections dropped at a full accept queue (all processes)."""
    with open("/proc/net/netstat") as fh:
        lines = [line.split() for line in fh if line.startswith("TcpExt:")]
    return int(dict(zip(lines[0], lines[1], strict=True))["ListenOverflows"])


async def check_registry(env: dict[str, str], n: int) -> None:
    """Every agent is one connected leader instance on B in the table and in Redis."""
    import psycopg
    import redis.asyncio as aioredis

    with psycopg.connect(env["DATABASE_URL"]) as conn:
        (connected,) = conn.execute(
            "SELECT count(*) FROM agents_app_agentinstance WHERE connected AND is_leader AND pod = %s",
            ["herd-b"],
        ).fetchone()
    client = aioredis.Redis.from_url(env["REDIS_URL"])
    try:
        live = 0
        for i in range(n):
            entry = await client.hget(f"streamspace:agents:connections:sim-{i}", f"sim-{i}-0")
            live += bool(entry) and json.loads(entry)["pod"] == "herd-b"
    finally:
        await client.aclose()
    print(f"  registry: {connected} connected leader rows on B, {live} Redis connection entries on B (of {n})")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] * 1000


async def main_async(args: argparse.Namespace) -> None:
    env = bench_env(args.database, redis_db=args.redis_db)
    env["AGENT_HEARTBEAT_INTERVAL_S"] = "10"
    reset_database(env, args.database)
    manage_shell(env, SETUP.replace("{n}", str(args.agents)))
    if args.herd:
        await herd(args, env)
        return
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
            f"({RETRIES['count']} handshakes refused or timed out, retried)"
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

        if not args.commands:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            return
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
    parser.add_argument("--herd", action="store_true", help="measure the reconnect herd (see the module's doc)")
    parser.add_argument("--first-delay", type=float, default=0.0, help="--herd: first reconnect waits U[0, S] s")
    parser.add_argument("--profile", help="--herd: write a py-spy raw profile of replica B here")
    parser.add_argument(
        "--trace", action="store_true", help="--herd: per-agent stage timeline (B runs bench/traced_hub_serve.py)"
    )
    parser.add_argument("--database", default=DB, help="PostgreSQL database (dropped and created)")
    parser.add_argument("--redis-db", type=int, default=REDIS_DB)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    os.sched_setaffinity(0, {1})
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()

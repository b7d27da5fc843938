"""Session proxy benchmark: one upstream, measured direct and through four proxies.

    DATABASE_URL is set by the script (a scratch database); needs PostgreSQL, Redis, wrk,
    nginx and npm.  .venv/bin/python bench/proxy_bench.py [--seconds 5]

Targets (same upstream, ``tests/proxy/upstream_server.py``):
  direct         the upstream itself
  proxy          StreamSpace's proxy in daphne (``python -m streamspace.serve``), direct mode
                 (``/api/v1/http/<id>/``)
  proxy-tunnel   the same through an agent tunnel (``agent_runtime.tunnel.run_tunnel``)
  proxy-daphne   the proxy in direct mode without its HTTP front (``STREAMSPACE_PROXY_FRONT=0``):
                 every request through daphne's own HTTP channel
  nginx          Debian's nginx, one worker, keep-alive upstream pool
  chp            configurable-http-proxy (JupyterHub's proxy), installed under bench/node_modules
  daphne-floor   no proxy: daphne (the same launcher) serving ``bench/daphne_floor_app.py``, which answers itself
                 (the ceiling for any ASGI app under daphne on one core)

Every proxy is pinned to CPU 1 (``taskset``); the upstream, wrk and the WebSocket client
share CPU 0. Metrics: small-request req/s and p99 (wrk, 32 connections), 1 MiB download
MB/s (wrk, 4 connections), WebSocket 64-byte round trip p50/p99 and 64 KiB echo
throughput (asyncio client), and the control plane's RSS while 1 GiB streams through it.
Each is also divided into the server's CPU time (``/proc/<pid>/stat``: threads and child
processes included), which is steadier than throughput on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from websockets.asyncio.client import connect as ws_connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import PYTHON, ROOT, bench_env, free_port, manage_shell, reset_database

DATABASE = "streamspace_proxybench"
TARGETS = ("direct", "proxy", "proxy-tunnel", "proxy-daphne", "nginx", "chp", "daphne-floor")
CHP_VERSION = "5.3.0"
# daphne as every deployment starts it (streamspace/serve.py: uvloop, frozen heap), for the
# proxy and the floor alike.
SERVE = [PYTHON, "-m", "streamspace.serve"]
MIB = 1024 * 1024


def wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def process(cmd: list[str], *, env: dict | None = None, port: int | None = None, cpu: int | None = None):
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if port:
            wait_port(port)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def wrk(url: str, *, seconds: int, connections: int, headers: dict[str, str]) -> dict[str, float]:
    cmd = ["taskset", "-c", "0", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    scale = {"B": 1 / MIB, "KB": 1 / 1024, "MB": 1, "GB": 1024}[transfer.group(2)]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error responses\n{out}")
    return {"rps": rps, "mbps": float(transfer.group(1)) * scale, "p99_ms": p99_ms}


async def ws_measure(url: str, headers: dict[str, str], seconds: float, cpu: Callable[[], float]) -> dict[str, float]:
    async with ws_connect(url, additional_headers=headers, compression=None, max_size=None) as ws:
        payload = b"p" * 64
        latencies = []
        cpu_started = cpu()
        deadline = time.monotonic() + seconds / 2
        while time.monotonic() < deadline and len(latencies) < 20000:
            started = time.perf_counter()
            await ws.send(payload)
            await ws.recv()
            latencies.append(time.perf_counter() - started)
        rtt_cpu = (cpu() - cpu_started) / len(latencies)
        latencies.sort()
        big = b"b" * (64 * 1024)
        window, sent, received = 8, 0, 0
        cpu_started = cpu()
        started = time.perf_counter()
        deadline = time.monotonic() + seconds / 2
        while time.monotonic() < deadline:
            while sent - received < window:
                await ws.send(big)
                sent += 1
            await ws.recv()
            received += 1
        elapsed = time.perf_counter() - started
        while received < sent:
            await ws.recv()
            received += 1
        ws_cpu = (cpu() - cpu_started) / received
    return {
        "rtt_p50_ms": statistics.median(latencies) * 1000,
        "rtt_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "ws_mbps": received * len(big) / elapsed / MIB,
        "cpu_rtt_us": rtt_cpu * 1e6,
        "cpu_ws_us": ws_cpu * 1e6,
    }


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, its threads and its child processes (nginx's worker)."""
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for each in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(re.search(r"VmRSS:\s+(\d+)", fh.read()).group(1))


def memory_during_gigabyte(url: str, headers: dict[str, str], pid: int) -> dict[str, float]:
    samples = [rss_kib(pid)]
    done = threading.Event()

    def sample():
        while not done.wait(0.1):
            samples.append(rss_kib(pid))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    received = 0
    started = time.perf_counter()
    with httpx.stream("GET", url, params={"size": 1024 * MIB}, headers=headers, timeout=60) as response:
        for chunk in response.iter_raw(4 * MIB):
            received += len(chunk)
    elapsed = time.perf_counter() - started
    done.set()
    thread.join()
    assert received == 1024 * MIB, received
    return {"rss_start_mib": samples[0] / 1024, "rss_peak_mib": max(samples) / 1024, "gib_seconds": elapsed}


NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  upstream session {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://session;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 3600s;
    }}
  }}
}}
"""


def ensure_chp() -> Path:
    binary = ROOT / "bench" / "node_modules" / ".bin" / "configurable-http-proxy"
    if not binary.exists():
        subprocess.run(
            [
                "npm",
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(ROOT / "bench"),
                f"configurable-http-proxy@{CHP_VERSION}",
            ],
            check=True,
        )
    return binary


SETUP = """
from agents_app.models import Agent
from agents_app.tokens import hash_token
from sessions_app.models import Template
from streamspace.accounts.models import User
from streamspace.accounts.tokens import create_token
from tests.proxy.conftest import make_session
import json
user = User.objects.create_user("bench", password="x")
template = Template.objects.create(slug="bench", display_name="Bench", image="bench/session:1")
direct = Agent.objects.create(agent_id="bench-direct", platform="docker", token_hash=hash_token("t-direct"), proxy_mode="direct")
tunnel = Agent.objects.create(agent_id="bench-tunnel", platform="docker", token_hash=hash_token("t-tunnel"), proxy_mode="tunnel")
out = {}
for name, agent in (("proxy", direct), ("proxy-tunnel", tunnel)):
    s = make_session(user, template, agent, endpoint="127.0.0.1:%(upstream)d")
    # The portal's prefix takes an API client's Authorization header (browsers use the session's origin).
    out[name] = {"id": str(s.pk), "authorization": "Token " + create_token(user, name=name, scope="write")[1]}
print(json.dumps(out))
"""

FAKE_AGENT = """
import asyncio, os
from channels.layers import get_channel_layer
from django.utils import timezone
from agents_app.dispatch import TUNNEL_MESSAGE_TYPE
from agents_app.models import Agent, AgentInstance
from agent_runtime.protocol import InventoryItem
from agent_runtime.tunnel import run_tunnel

class Backend:
    async def status(self, session_id):
        return InventoryItem(session_id=session_id, state="running", endpoint="127.0.0.1:%(upstream)d")

async def main():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    agent = await Agent.objects.aget(agent_id="bench-tunnel")
    await AgentInstance.objects.acreate(agent=agent, instance_id="bench", pod="bench", channel_name=channel,
        is_leader=True, connected=True, connected_at=timezone.now())
    tasks = set()
    while True:
        message = await layer.receive(channel)
        if message["type"] == TUNNEL_MESSAGE_TYPE:
            task = asyncio.create_task(run_tunnel(message["payload"], token="t-tunnel", backend=Backend()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
asyncio.run(main())
"""


def run(seconds: int, rounds: int, only: set[str], hold: float = 0) -> dict[str, dict[str, float]]:
    if not shutil.which("wrk") or not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        subprocess.run([str(ROOT / "scripts" / "ensure-deploy-tools.sh")], check=True)
    os.sched_setaffinity(0, {0})
    env = bench_env(DATABASE, redis_db=3)
    reset_database(env, DATABASE)
    upstream = free_port()
    sessions = json.loads(manage_shell(env, SETUP % {"upstream": upstream}).strip().splitlines()[-1])
    chp = ensure_chp()
    results: dict[str, dict[str, float]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="proxybench-"))
    ports = {name: free_port() for name in ("daphne", "daphne-nofront", "nginx", "chp", "chp-api", "floor")}
    env["POD_URL"] = f"http://127.0.0.1:{ports['daphne']}"
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, upstream=upstream, port=ports["nginx"]))
    with contextlib.ExitStack() as stack:
        upstream_server = stack.enter_context(
            process([PYTHON, "-m", "tests.proxy.upstream_server", "--port", str(upstream)], port=upstream, cpu=0)
        )
        daphne = stack.enter_context(
            process(
                [
                    *SERVE,
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(ports["daphne"]),
                    "streamspace.asgi:application",
                ],
                env=env,
                port=ports["daphne"],
                cpu=1,
            )
        )
        plain = [*SERVE, "-b", "127.0.0.1", "-p", str(ports["daphne-nofront"]), "streamspace.asgi:application"]
        plain_daphne = stack.enter_context(
            process(plain, env={**env, "STREAMSPACE_PROXY_FRONT": "0"}, port=ports["daphne-nofront"], cpu=1)
        )
        stack.enter_context(
            process([PYTHON, "manage.py", "shell", "-c", FAKE_AGENT % {"upstream": upstream}], env=env, cpu=0)
        )
        nginx = stack.enter_context(
            process(
                [
                    shutil.which("nginx") or "/usr/sbin/nginx",
                    "-p",
                    str(tmp),
                    "-c",
                    str(tmp / "nginx.conf"),
                    "-g",
                    "daemon off;",
                ],
                port=ports["nginx"],
                cpu=1,
            )
        )
        chp_server = stack.enter_context(
            process(
                [
                    str(chp),
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(ports["chp"]),
                    "--api-port",
                    str(ports["chp-api"]),
                    "--default-target",
                    f"http://127.0.0.1:{upstream}",
                    "--log-level",
                    "error",
                ],
                port=ports["chp"],
                cpu=1,
            )
        )
        floor = ["-b", "127.0.0.1", "-p", str(ports["floor"]), "bench.daphne_floor_app:application"]
        floor_server = stack.enter_context(process([*SERVE, *floor], env=env, port=ports["floor"], cpu=1))
        # Whose CPU time each target's numbers are divided by (the tunnel's agent is not counted).
        servers = {
            "direct": upstream_server.pid,
            "proxy": daphne.pid,
            "proxy-tunnel": daphne.pid,
            "proxy-daphne": plain_daphne.pid,
            "nginx": nginx.pid,
            "chp": chp_server.pid,
            "daphne-floor": floor_server.pid,
        }
        targets = {
            "direct": (f"http://127.0.0.1:{upstream}", {}),
            "proxy": (
                f"http://127.0.0.1:{ports['daphne']}/api/v1/http/{sessions['proxy']['id']}",
                {"Authorization": sessions["proxy"]["authorization"]},
            ),
            "proxy-tunnel": (
                f"http://127.0.0.1:{ports['daphne']}/api/v1/http/{sessions['proxy-tunnel']['id']}",
                {"Authorization": sessions["proxy-tunnel"]["authorization"]},
            ),
            "proxy-daphne": (
                f"http://127.0.0.1:{ports['daphne-nofront']}/api/v1/http/{sessions['proxy']['id']}",
                {"Authorization": sessions["proxy"]["authorization"]},
            ),
            "nginx": (f"http://127.0.0.1:{ports['nginx']}", {}),
            "chp": (f"http://127.0.0.1:{ports['chp']}", {}),
            "daphne-floor": (f"http://127.0.0.1:{ports['floor']}", {}),
        }
        targets = {name: target for name, target in targets.items() if name in only or name == "direct"}
        for base, headers in targets.values():  # warm up; the fake agent registers meanwhile
            deadline = time.monotonic() + 60
            while httpx.get(base + "/small", headers=headers, timeout=30).status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{base} does not answer")
                time.sleep(0.5)
        if hold:
            print(json.dumps({"servers": servers, "targets": targets}), flush=True)
            time.sleep(hold)
        # Round-robin, best of ``rounds``: the machine is shared, so noise hits every target alike.
        for _ in range(rounds):
            for name, (base, headers) in targets.items():
                pid = servers[name]

                def cpu(pid: int = pid) -> float:
                    return cpu_seconds(pid)

                started = cpu()
                small = wrk(base + "/small", seconds=seconds, connections=32, headers=headers)
                cpu_small = (cpu() - started) / (small["rps"] * seconds)
                started = cpu()
                big = wrk(base + f"/bytes?size={MIB}", seconds=seconds, connections=4, headers=headers)
                cpu_gib = (cpu() - started) / (big["mbps"] * seconds / 1024)
                ws = asyncio.run(ws_measure(base.replace("http://", "ws://") + "/ws", headers, seconds, cpu))
                current = {
                    "rps": small["rps"],
                    "p99_ms": small["p99_ms"],
                    "mbps": big["mbps"],
                    **ws,
                    "cpu_small_us": cpu_small * 1e6,
                    "cpu_gib_s": cpu_gib,
                }
                best = results.setdefault(name, current)
                for key, value in current.items():
                    better = min if key.endswith("_ms") or key.startswith("cpu_") else max
                    best[key] = better(best[key], value)
                load = os.getloadavg()[0]
                print(
                    f"{name:<13} {json.dumps({k: round(v, 2) for k, v in current.items()})} load {load:.1f}", flush=True
                )
        if "proxy" in targets:
            memory = memory_during_gigabyte(targets["proxy"][0] + "/bytes", targets["proxy"][1], daphne.pid)
            print(f"daphne RSS during a 1 GiB download: {json.dumps({k: round(v, 1) for k, v in memory.items()})}")
    shutil.rmtree(tmp, ignore_errors=True)
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    direct = results["direct"]
    lines = [
        "| target | small req/s (x direct) | small p99 | 1 MiB MB/s (x direct) | WS RTT p50 / p99 | WS 64 KiB MB/s (x direct) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['rps']:.0f} ({r['rps'] / direct['rps']:.2f}x) | {r['p99_ms']:.1f} ms | "
            f"{r['mbps']:.0f} ({r['mbps'] / direct['mbps']:.2f}x) | {r['rtt_p50_ms']:.2f} / {r['rtt_p99_ms']:.2f} ms | "
            f"{r['ws_mbps']:.0f} ({r['ws_mbps'] / direct['ws_mbps']:.2f}x) |"
        )
    lines += [
        "",
        "Server CPU per unit of work (lower is better; `direct` is the upstream itself):",
        "",
        "| target | small request | 1 MiB download | WS 64 B round trip | WS 64 KiB message |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['cpu_small_us']:.0f} µs | {r['cpu_gib_s']:.2f} s/GiB | {r['cpu_rtt_us']:.0f} µs | "
            f"{r['cpu_ws_us']:.0f} µs |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=4, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many round-robin rounds")
    parser.add_argument("--only", default=",".join(TARGETS), help="comma-separated targets (direct always runs)")
    parser.add_argument(
        "--hold",
        type=float,
        default=0,
        help="after setup, print the servers and targets and wait this long (profiling)",
    )
    args = parser.parse_args()
    started = os.getloadavg()
    print(table(run(args.seconds, args.rounds, set(args.only.split(",")), args.hold)))
    print(f"load average at start {started[0]:.1f}/{started[1]:.1f}, at end {os.getloadavg()[0]:.1f}")

"""Where the one-session read's latency tail comes from: every request timed, on both sides.

    .venv/bin/python bench/read_tail.py [--seconds 10] [--connections 50] [--auth jwt|token|portal]
        [--database ss_read_tail] [--redis-db 9] [--keep DIR] [--garbage] [--threads N] [--gc-young N]

The setting of ``bench/jupyterhub_bench.py``'s one-session row (``GET
/api/v1/sessions/{id}`` over 1,000 sessions, PostgreSQL + Redis, DEBUG off, the server
pinned to CPU 1, the client on CPU 0, a closed loop of 50 keep-alive connections), with
an asyncio client that records each request's send and receive time and numbers it
(``X-Bench-Seq``), and the server run by ``bench/traced_serve.py``, which records when
daphne parsed the request, when the ASGI application started it, when a worker thread
began and ended its Django work, when the response was handed back, and every run of the
cyclic garbage collector. All on ``time.monotonic()``.

It prints the latency percentiles (as wrk reports them) and, for the slowest 1 % and for
the rest, the mean of each stage:

* ``kernel+parse``: send → daphne's ``process`` (socket buffers, the event loop reaching
  the connection, Twisted's parsing);
* ``to app``: ``process`` → the ASGI application called;
* ``queue``: application → worker thread (the executor's queue);
* ``django``: the worker thread's Django work (wall time: other threads hold the GIL too);
* ``to loop``: thread done → response handed to daphne;
* ``write+recv``: handed → the client has the whole response;

plus the collector's runs that overlapped the slow ones, and
the latency by second (is the tail spread out or in bursts?).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import streamspace_side as side
from common import PYTHON, ROOT, bench_env, free_port, manage_shell, reset_database
from jupyterhub_bench import SETUP

STAGES = [
    ("kernel+parse", "send", "process"),
    ("to app", "process", "app"),
    ("queue", "app", "thread"),
    ("django", "thread", "done"),
    ("to loop", "done", "sent"),
    ("write+recv", "sent", "recv"),
]


async def connection(
    port: int, head: bytes, ids: list[str], start: int, stop_at: float, log: list, counter: list
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    index = start
    try:
        while time.monotonic() < stop_at:
            seq = counter[0]
            counter[0] += 1
            path = f"/api/v1/sessions/{ids[index % len(ids)]}"
            index += 1
            sent = time.monotonic()
            writer.write(f"GET {path} HTTP/1.1\r\n".encode() + head + f"X-Bench-Seq: {seq}\r\n\r\n".encode())
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            log.append((seq, sent, time.monotonic(), int(status_line.split()[1])))
    finally:
        writer.close()


async def load(port: int, head: bytes, ids: list[str], connections: int, seconds: float) -> list:
    log: list = []
    counter = [0]
    stop_at = time.monotonic() + seconds
    await asyncio.gather(*(connection(port, head, ids, n * 20, stop_at, log, counter) for n in range(connections)))
    return log


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def analyse(log: list, trace: dict, warmup: float) -> None:
    first = min(sent for _, sent, _, _ in log)
    log = [entry for entry in log if entry[1] >= first + warmup]
    requests = trace["requests"]
    rows = []
    for seq, sent, recv, status in log:
        record = {"send": sent, "recv": recv, **requests.get(str(seq), {})}
        if status != 200 or any(key not in record for _, key, _ in STAGES):
            continue
        rows.append(record)
    latencies = [1000 * (r["recv"] - r["send"]) for r in rows]
    elapsed = max(r["recv"] for r in rows) - min(r["send"] for r in rows)
    print(
        f"{len(rows)} requests in {elapsed:.1f} s: {len(rows) / elapsed:.0f} req/s; latency ms "
        f"p50 {percentile(latencies, 0.5):.1f}, p90 {percentile(latencies, 0.9):.1f}, "
        f"p99 {percentile(latencies, 0.99):.1f}, max {max(latencies):.1f}, mean {statistics.mean(latencies):.1f}"
    )
    cut = percentile(latencies, 0.99)
    slow = [r for r, ms in zip(rows, latencies, strict=True) if ms >= cut]
    rest = [r for r, ms in zip(rows, latencies, strict=True) if ms < cut]
    print(f"{'stage':14} {'slowest 1 % (ms)':>18} {'the rest (ms)':>15} {'max (ms)':>10}")
    for name, start, end in STAGES:
        print(
            f"{name:14} {statistics.mean(1000 * (r[end] - r[start]) for r in slow):18.1f} "
            f"{statistics.mean(1000 * (r[end] - r[start]) for r in rest):15.1f} "
            f"{max(1000 * (r[end] - r[start]) for r in rows):10.1f}"
        )
    runs, open_runs = [], {}
    for phase, generation, at, cpu in trace["gc"]:
        if phase == "start":
            open_runs[generation] = (at, cpu)
        elif generation in open_runs:
            start, start_cpu = open_runs.pop(generation)
            runs.append((generation, start, at, cpu - start_cpu))
    span = (min(r["send"] for r in rows), max(r["recv"] for r in rows))
    runs = [run for run in runs if span[0] <= run[1] <= span[1]]
    for generation in sorted({run[0] for run in runs}):
        times = [1000 * (end - start) for g, start, end, _ in runs if g == generation]
        cpu = [1000 * used for g, _, _, used in runs if g == generation]
        print(
            f"gc generation {generation}: {len(times)} runs, {sum(times):.1f} ms in all (CPU {sum(cpu):.1f} ms), "
            f"longest {max(times):.1f} ms (CPU {max(cpu):.1f} ms)"
        )
    touched = sum(1 for r in slow if any(start < r["recv"] and end > r["send"] for _, start, end, _ in runs))
    print(f"slowest 1 %: {touched} of {len(slow)} overlap a collection")
    by_second: dict[int, list[float]] = {}
    for r, ms in zip(rows, latencies, strict=True):
        by_second.setdefault(int(r["send"] - span[0]), []).append(ms)
    print("by second: " + "  ".join(f"{s}:{len(v)}/{max(v):.0f}" for s, v in sorted(by_second.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--auth", choices=["jwt", "token", "portal"], default="jwt")
    parser.add_argument("--database", default="ss_read_tail")
    parser.add_argument("--redis-db", type=int, default=9)
    parser.add_argument(
        "--garbage", action="store_true", help="also list what the collector frees (the cycles requests leave)"
    )
    parser.add_argument("--threads", type=int, help="the server's request threads, to compare")
    parser.add_argument("--gc-young", type=int, help="the server's young-generation threshold, to compare")
    parser.add_argument("--keep", type=Path, help="write the raw client log and server trace here")
    args = parser.parse_args()
    env = bench_env(args.database, args.redis_db)
    env.update(JWT_ACCESS_MINUTES="600", LOGIN_FAILURE_LIMIT="1000000")
    if args.garbage:
        env["BENCH_GC_GARBAGE"] = "1"
    if args.threads:
        env["STREAMSPACE_REQUEST_THREADS"] = str(args.threads)
    if args.gc_young:
        env["BENCH_GC_YOUNG"] = str(args.gc_young)
    reset_database(env, args.database)
    setup = SETUP.replace("LOCAL_TOKEN", repr("unused")).replace("SESSIONS", "1000")
    facts = json.loads(manage_shell(env, setup).strip().splitlines()[-1])
    port = free_port()
    trace_path = ROOT / ".streamspace" / f"read-tail-{port}.json"
    cmd = ["taskset", "-c", "1", PYTHON, str(ROOT / "bench" / "traced_serve.py"), str(trace_path)]
    cmd += ["-b", "127.0.0.1", "-p", str(port), "streamspace.asgi:application"]
    log_file = open(ROOT / ".streamspace" / f"read-tail-{port}.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        auth = {
            "jwt": f"Authorization: Bearer {side.login(base, 'bench')}",
            "token": f"Authorization: Token {facts['api_token']}",
            "portal": f"Cookie: sessionid={facts['portal_session']}",
        }[args.auth]
        head = f"Host: 127.0.0.1:{port}\r\n{auth}\r\n".encode()
        os.sched_setaffinity(0, {0})
        print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
        log = asyncio.run(load(port, head, facts["ids"], args.connections, args.warmup + args.seconds))
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log_file.close()
    trace = json.loads(trace_path.read_text())
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        (args.keep / "client.json").write_text(json.dumps(log))
        (args.keep / "server.json").write_text(json.dumps(trace))
    trace_path.unlink()
    analyse(log, trace, args.warmup)
    if trace["garbage"]:
        counted = len([seq for seq, *_ in log if seq >= 1000])
        total = sum(n for _, n in trace["garbage"])
        print(f"garbage in cycles: {total / counted:.1f} objects a request; the commonest kinds, per request:")
        for kind, n in trace["garbage"][:40]:
            print(f"  {n / counted:7.2f}  {kind}")


if __name__ == "__main__":
    sys.exit(main())

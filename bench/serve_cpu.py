"""The server's CPU per one-session read by kind of authentication, the kinds taking turns.

    .venv/bin/python bench/serve_cpu.py [--rounds 10] [--block 2] [--connections 50]
        [--database ss_read_servecpu] [--redis-db 9]

``bench/jupyterhub_bench.py``'s one-session rows measure one kind for 10 s after
another, so on a shared machine the load changes between kinds by more than the kinds
differ. Here one ``python -m streamspace.serve`` (pinned to CPU 1; PostgreSQL + Redis,
DEBUG off, 1,000 sessions) serves ``GET /api/v1/sessions/{id}`` with a JWT, an API token
and the portal's session cookie in turns of ``--block`` seconds each (a closed loop of
``--connections`` keep-alive connections from ``bench/read_tail.py``'s client, on CPU 0),
and each kind's figure is the server process's CPU time (``/proc``) over its turns divided
by its requests: daphne, Django and the thread hops included, PostgreSQL not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import streamspace_side as side
from common import bench_env, daphne, manage_shell, reset_database
from jupyterhub_bench import SETUP
from read_tail import load

HZ = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=float, default=2, help="seconds of one kind's turn")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--database", default="ss_read_servecpu")
    parser.add_argument("--redis-db", type=int, default=9)
    args = parser.parse_args()
    env = bench_env(args.database, args.redis_db)
    env.update(JWT_ACCESS_MINUTES="600", LOGIN_FAILURE_LIMIT="1000000")
    reset_database(env, args.database)
    facts = json.loads(
        manage_shell(env, SETUP.replace("LOCAL_TOKEN", "''").replace("SESSIONS", "1000")).strip().splitlines()[-1]
    )
    with daphne(env, cpu=1) as (base, proc):
        port = int(base.rsplit(":", 1)[1])
        kinds = {
            "JWT": f"Authorization: Bearer {side.login(base, 'bench')}",
            "API token": f"Authorization: Token {facts['api_token']}",
            "portal cookie": f"Cookie: sessionid={facts['portal_session']}",
        }
        os.sched_setaffinity(0, {0})
        ticks = dict.fromkeys(kinds, 0)
        done = dict.fromkeys(kinds, 0)
        print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
        for number in range(args.rounds + 1):  # round 0 warms every path
            for kind, header in kinds.items():
                head = f"Host: 127.0.0.1:{port}\r\n{header}\r\n".encode()
                before = cpu_ticks(proc.pid)
                log = asyncio.run(load(port, head, facts["ids"], args.connections, args.block))
                if number:
                    ticks[kind] += cpu_ticks(proc.pid) - before
                    done[kind] += sum(1 for entry in log if entry[3] == 200)
        print(f"load average {os.getloadavg()[0]:.1f}; {args.rounds} turns of {args.block:g} s per kind")
    base_ms = 1000 * ticks["JWT"] / HZ / done["JWT"]
    for kind in kinds:
        ms = 1000 * ticks[kind] / HZ / done[kind]
        print(f"  {kind:14} {ms:6.3f} ms server CPU per request ({ms / base_ms:.2f}× JWT's), {done[kind]} requests")


if __name__ == "__main__":
    sys.exit(main())

"""Session-create and session-list throughput against PostgreSQL with daphne.

    make bench            # or: .venv/bin/python bench/api_bench.py [--seconds 10] [--concurrency 8]

Daphne is pinned to CPU 0 and the load generator to CPU 1 (2-core machine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import httpx
from common import bench_env, daphne, manage_shell, reset_database, summarize

SETUP = """
from streamspace.accounts.models import User
from sessions_app.models import Template, UserQuota
from agents_app.models import Agent, AgentInstance
from agents_app.tokens import hash_token
u = User.objects.create_user('bench', password='bench-password', role='user')
UserQuota.objects.create(user=u, max_sessions=10**6, max_cpu_millicores=10**9, max_memory_mb=10**9)
Template.objects.create(slug='bench', display_name='Bench', image='registry.local/bench:1')
a = Agent.objects.create(agent_id='bench-docker', platform='docker', token_hash=hash_token('bench'))
# A leader connected on no channel: launches are placed, their commands stay pending.
AgentInstance.objects.create(agent=a, instance_id='bench-0', is_leader=True, connected=True)
"""


async def run_load(
    base: str, token: str, method: str, path: str, body: dict | None, seconds: float, concurrency: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=30, limits=httpx.Limits(max_connections=concurrency)
    ) as client:

        async def worker():
            while time.monotonic() < deadline:
                start = time.perf_counter()
                response = await client.request(method, path, json=body)
                latencies.append(time.perf_counter() - start)
                assert response.status_code < 300, response.text

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    env = bench_env()
    reset_database(env)
    manage_shell(env, SETUP)
    os.sched_setaffinity(0, {1})
    with daphne(env, cpu=0) as (base, _):
        token = httpx.post(
            base + "/api/v1/auth/login", json={"username": "bench", "password": "bench-password"}
        ).json()["access"]
        print(
            f"daphne on CPU 0, PostgreSQL with psycopg pool, {args.concurrency} concurrent clients, "
            f"{args.seconds:.0f} s each"
        )
        lat, elapsed = asyncio.run(
            run_load(base, token, "POST", "/api/v1/sessions", {"template": "bench"}, args.seconds, args.concurrency)
        )
        print(summarize("POST /api/v1/sessions", lat, elapsed))
        for size in (20, 100):
            lat, elapsed = asyncio.run(
                run_load(base, token, "GET", f"/api/v1/sessions?page_size={size}", None, args.seconds, args.concurrency)
            )
            print(summarize(f"GET /api/v1/sessions ({size}/page)", lat, elapsed))
        lat, elapsed = asyncio.run(run_load(base, token, "GET", "/healthz", None, args.seconds, args.concurrency))
        print(summarize("GET /healthz (baseline)", lat, elapsed))


if __name__ == "__main__":
    main()

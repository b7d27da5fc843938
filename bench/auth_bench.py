"""Cost of each way to authenticate an API request, and of a password login, under daphne.

    .venv/bin/python bench/auth_bench.py [--seconds 6] [--concurrency 8]

Measures ``GET /api/v1/users/me`` with a JWT (``Bearer``), a personal API token (``Token``:
prefix lookup + SHA-256), and ``POST /api/v1/auth/login`` (PBKDF2 at Django's default
iterations, lockout bookkeeping, audit row). PostgreSQL + Redis; daphne on CPU 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import httpx
from common import bench_env, daphne, manage_shell, reset_database, summarize

DATABASE = "streamspace_bench_auth"
SETUP = """
from streamspace.accounts.models import User
from streamspace.accounts.tokens import create_token
u = User.objects.create_user('bench', password='bench-password', role='user')
print(create_token(u, name='bench', scope='read')[1])
"""


async def load(base: str, method: str, path: str, headers: dict, body: dict | None, seconds: float, concurrency: int):
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:

        async def worker() -> None:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                response = await client.request(method, path, json=body)
                latencies.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    env = bench_env(DATABASE, redis_db=13)
    env["LOGIN_FAILURE_LIMIT"] = "1000000"
    reset_database(env, DATABASE)
    api_key = manage_shell(env, SETUP).strip().splitlines()[-1]
    os.sched_setaffinity(0, {1})
    with daphne(env, cpu=0) as (base, _):
        login = {"username": "bench", "password": "bench-password"}
        jwt = httpx.post(base + "/api/v1/auth/login", json=login, timeout=30).json()["access"]
        print(f"daphne on CPU 0, {args.concurrency} concurrent clients, {args.seconds:.0f} s each")
        cases = [
            ("GET /users/me  Bearer JWT", "GET", "/api/v1/users/me", {"Authorization": f"Bearer {jwt}"}, None),
            ("GET /users/me  Token key", "GET", "/api/v1/users/me", {"Authorization": f"Token {api_key}"}, None),
            ("POST /auth/login (PBKDF2)", "POST", "/api/v1/auth/login", {}, login),
        ]
        for name, method, path, headers, body in cases:
            lat, elapsed = asyncio.run(load(base, method, path, headers, body, args.seconds, args.concurrency))
            print(summarize(name, lat, elapsed))


if __name__ == "__main__":
    main()

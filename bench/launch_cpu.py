"""CPU per launch (``POST /api/v1/sessions``) in one process, with its statements (no HTTP server).

    .venv/bin/python bench/launch_cpu.py [--launches 2000] [--database ss_launch_cpu_bench]
                                         [--redis-db 5] [--profile FILE]

The full Django stack (every middleware, DRF, the view, the launch's transaction, its
after-commit work, the renderer) through Django's test client with a JWT, on PostgreSQL +
Redis with DEBUG off, set up as ``bench/jupyterhub_bench.py``'s ``POST`` row: a docker agent
holding 1,000 running sessions of another user, its leader connected on no channel (the
launches' commands stay ``pending``). The figure is this process's CPU time
(``time.process_time``) per launch, which leaves out daphne's HTTP work and PostgreSQL's
own CPU; the statements of one launch are listed once. ``--profile FILE`` writes a cProfile
of the measured launches (``python -m pstats FILE``). The database is created anew.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import sys
import time
from pathlib import Path

from common import ROOT, django_in_process

sys.path.insert(0, str(ROOT))


def setup_data(sessions: int) -> str:
    from django.db import connection
    from django.utils import timezone
    from rest_framework_simplejwt.tokens import AccessToken

    from agents_app.models import Agent, AgentInstance
    from sessions_app.models import Session, Template, UserQuota
    from streamspace.accounts.models import User

    big = {"max_sessions": 10**6, "max_cpu_millicores": 10**9, "max_memory_mb": 10**9}
    reader = User.objects.create_user("bench", password="bench-password", role="user")
    launcher = User.objects.create_user("launcher", password="bench-password", role="user")
    for user in (reader, launcher):
        UserQuota.objects.create(user=user, **big)
    template = Template.objects.create(slug="bench", display_name="Bench", image="registry.local/bench:1")
    agent = Agent.objects.create(agent_id="bench-docker", platform="docker", token_hash="x" * 64)
    AgentInstance.objects.create(agent=agent, instance_id="bench-0", is_leader=True, connected=True)
    now = timezone.now()
    rows = [
        Session(name=f"bench {i}", user=reader, template=template, agent=agent, state="running",
                platform="docker", cpu_millicores=100, memory_mb=128, idle_timeout_s=10**6,
                streaming_ready=True, streaming_port=8080, last_activity=now, state_changed_at=now)
        for i in range(sessions)
    ]  # fmt: skip
    Session.objects.bulk_create(rows, batch_size=500)
    with connection.cursor() as cursor:  # planner statistics, as autovacuum gathers them after a load
        cursor.execute("ANALYZE")
    return str(AccessToken.for_user(launcher))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--launches", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--database", default="ss_launch_cpu_bench")
    parser.add_argument("--redis-db", type=int, default=5)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    django_in_process(args.database, args.redis_db)
    from django.db import connection
    from django.test import Client

    jwt = setup_data(args.sessions)
    client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {jwt}")

    def launch() -> None:
        response = client.post("/api/v1/sessions", {"template": "bench"}, content_type="application/json")
        assert response.status_code == 202, (response.status_code, response.content[:300])

    for _ in range(100):  # warm every path (caches, compiled plans)
        launch()
    statements: list[str] = []

    def capture(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        launch()
    profile = cProfile.Profile(time.process_time) if args.profile else None
    started = time.process_time()
    if profile:
        profile.enable()
    for _ in range(args.launches):
        launch()
    if profile:
        profile.disable()
    ms = 1000 * (time.process_time() - started) / args.launches
    print(f"load average {os.getloadavg()[0]:.1f}; {args.launches} launches")
    print(f"  {ms:.3f} ms CPU per launch, {len(statements)} statements:")
    for sql in statements:
        print(f"    {' '.join(sql.split())[:160]}")
    if profile:
        profile.dump_stats(args.profile)


if __name__ == "__main__":
    main()

"""CPU per API read by kind of authentication, in one process, interleaved (no HTTP server).

    .venv/bin/python bench/api_cpu.py [--requests 3000] [--database ss_apiread_bench] [--redis-db 5]
                                      [--profile DIR]

The full Django stack (every middleware, DRF, the view, the renderer) through Django's test
client, on PostgreSQL + Redis with DEBUG off: ``GET /api/v1/sessions/{id}`` over 1,000
sessions with a JWT, a personal API token and the portal's session cookie, and a page of
100. The kinds take turns in blocks of 100 requests, so a busy machine slows them alike;
the figure is this process's CPU time (``time.process_time``) per request, which leaves out
daphne's HTTP work (the same for every kind) and PostgreSQL's own CPU. ``--profile DIR``
writes a cProfile of each kind (``python -m pstats``). The database is created anew.
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
BLOCK = 100


def setup_data(sessions: int) -> dict:
    from django.contrib.sessions.backends.db import SessionStore as DbSessionStore
    from django.db import connection
    from django.utils import timezone
    from rest_framework_simplejwt.tokens import AccessToken

    from agents_app.models import Agent
    from sessions_app.models import Session, Template
    from streamspace.accounts.models import User
    from streamspace.accounts.tokens import create_token

    reader = User.objects.create_user("bench", password="bench-password", role="user")
    template = Template.objects.create(slug="bench", display_name="Bench", image="registry.local/bench:1")
    agent = Agent.objects.create(agent_id="bench-docker", platform="docker", token_hash="x" * 64)
    now = timezone.now()
    rows = [
        Session(name=f"bench {i}", user=reader, template=template, agent=agent, state="running",
                platform="docker", cpu_millicores=100, memory_mb=128, idle_timeout_s=10**6,
                streaming_ready=True, streaming_port=8080, last_activity=now, state_changed_at=now)
        for i in range(sessions)
    ]  # fmt: skip
    Session.objects.bulk_create(rows, batch_size=500)
    portal = DbSessionStore()
    portal["_auth_user_id"] = str(reader.pk)
    portal["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    portal["_auth_user_hash"] = reader.get_session_auth_hash()
    portal.create()
    with connection.cursor() as cursor:  # planner statistics, as autovacuum gathers them after a load
        cursor.execute("ANALYZE")
    return {
        "ids": [str(r.pk) for r in rows],
        "jwt": str(AccessToken.for_user(reader)),
        "api_token": create_token(reader, name="bench", scope="read")[1],
        "portal_session": portal.session_key,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="per kind")
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--database", default="ss_apiread_bench")
    parser.add_argument("--redis-db", type=int, default=5)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    django_in_process(args.database, args.redis_db)
    from django.test import Client

    facts = setup_data(args.sessions)
    ids = facts["ids"]
    client = Client(HTTP_HOST="127.0.0.1")
    kinds = {
        "one, JWT": ({"HTTP_AUTHORIZATION": f"Bearer {facts['jwt']}"}, None),
        "one, API token": ({"HTTP_AUTHORIZATION": f"Token {facts['api_token']}"}, None),
        "one, portal cookie": ({"HTTP_COOKIE": f"sessionid={facts['portal_session']}"}, None),
        "page of 100, JWT": ({"HTTP_AUTHORIZATION": f"Bearer {facts['jwt']}"}, "/api/v1/sessions?page_size=100"),
    }
    spent = dict.fromkeys(kinds, 0.0)
    done = dict.fromkeys(kinds, 0)
    profiles = {kind: cProfile.Profile(time.process_time) for kind in kinds} if args.profile else {}

    def block(kind: str, count: int, offset: int) -> None:
        headers, path = kinds[kind]
        per = 1 if path is None else 10  # a page costs about ten reads
        started = time.process_time()
        for n in range(max(1, count // per)):
            url = path or f"/api/v1/sessions/{ids[(offset + n) % len(ids)]}"
            response = client.get(url, **headers)
            assert response.status_code == 200, (kind, response.status_code, response.content[:300])
        spent[kind] += time.process_time() - started
        done[kind] += max(1, count // per)

    for kind in kinds:  # warm every path (caches, compiled plans)
        block(kind, BLOCK, 0)
    spent, done = dict.fromkeys(kinds, 0.0), dict.fromkeys(kinds, 0)
    for offset in range(0, args.requests, BLOCK):
        for kind in kinds:
            if kind in profiles:
                profiles[kind].enable()
            block(kind, BLOCK, offset)
            if kind in profiles:
                profiles[kind].disable()
    print(f"load average {os.getloadavg()[0]:.1f}; {args.requests} requests per kind (a page: a tenth)")
    base = spent["one, JWT"] / done["one, JWT"]
    for kind in kinds:
        ms = 1000 * spent[kind] / done[kind]
        print(f"  {kind:20} {ms:6.3f} ms CPU per request  ({ms / base / 1000:.2f}× JWT's)")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        for kind, profile in profiles.items():
            profile.dump_stats(args.profile / (kind.replace(", ", "-").replace(" ", "_") + ".prof"))


if __name__ == "__main__":
    main()

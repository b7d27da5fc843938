"""Idle sweep cost on PostgreSQL + Redis (prints numbers; not a test).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> REDIS_URL=redis://127.0.0.1:6379/<n> \\
        .venv/bin/python bench/jobs_bench.py [--idle 500] [--running 10000]

Each hibernation is measured as it runs in production: committed, so the on-commit work
(the portal broadcast and the command sent to the agent's leader over the Redis channel
layer) is included. The leader is a channel this script creates; nothing reads it and its
messages expire with the layer's ``expiry``. Every row created is deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamspace.settings")

import django

django.setup()

from asgiref.sync import async_to_sync  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from agents_app.models import Agent, AgentCommand, AgentInstance  # noqa: E402
from sessions_app import sweeps  # noqa: E402
from sessions_app.models import Session, Template  # noqa: E402
from streamspace.accounts.models import User  # noqa: E402
from streamspace.audit.models import AuditEvent  # noqa: E402
from tests.support.factories import bulk_sessions  # noqa: E402


def _kind(sql: str) -> str:
    words = sql.split()
    head = " ".join(words[:2]) if words[0] in ("RELEASE", "ROLLBACK") else words[0]
    if head == "SELECT":
        table = next((w for w in words if w.startswith('"') and w.endswith('"')), "?")
        return f"SELECT {table.split('.')[0]}{' FOR UPDATE' if 'FOR UPDATE' in sql else ''}"
    if head in ("UPDATE", "INSERT", "DELETE"):
        return f"{head} {words[2] if head != 'UPDATE' else words[1]}"
    return head


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=int, default=500)
    parser.add_argument("--running", type=int, default=10_000)
    args = parser.parse_args()
    assert connection.vendor == "postgresql", "set DATABASE_URL to a PostgreSQL database"
    assert os.environ.get("REDIS_URL"), "set REDIS_URL (the channel layer carries the commands)"
    call_command("migrate", verbosity=0)
    tag = f"bench-idle-{uuid.uuid4().hex[:6]}"
    audit_before = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    layer = get_channel_layer()
    user = User.objects.create_user(tag, password="x")
    template = Template.objects.create(slug=tag, display_name="b", image="b:1")
    agent = Agent.objects.create(agent_id=tag, platform="docker", token_hash=tag)
    AgentInstance.objects.create(
        agent=agent,
        instance_id=f"{tag}-leader",
        pod="bench",
        channel_name=async_to_sync(layer.new_channel)(),
        is_leader=True,
        connected=True,
        connected_at=timezone.now(),
        last_heartbeat=timezone.now(),
    )
    try:
        bulk_sessions(user, template, agent, args.running, idle_for_s=10, idle_timeout_s=3600)
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            result = sweeps.idle_sweep()
            elapsed = time.perf_counter() - started
        print(f"{args.running:,} running, none idle: {elapsed * 1000:.1f} ms, {len(queries)} queries")

        bulk_sessions(user, template, agent, args.idle, idle_for_s=7200, idle_timeout_s=60)
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            result = sweeps.idle_sweep()
            elapsed = time.perf_counter() - started
        done = len(result.hibernated)
        assert done == args.idle, result.as_dict()
        sent = AgentCommand.objects.filter(agent=agent, state="sent").count()
        print(
            f"{args.running:,} running + {args.idle} idle: {elapsed * 1000:.0f} ms "
            f"({elapsed / done * 1000:.2f} ms a session), {len(queries)} queries "
            f"({len(queries) / done:.1f} a session), {sent} commands sent to the leader"
        )
        kinds = Counter(_kind(q["sql"]) for q in queries.captured_queries)
        for kind, count in kinds.most_common():
            print(f"  {count / done:5.2f} a session  {kind}")
    finally:
        # the bench's own database: every audit event written meanwhile is the bench's
        AuditEvent.objects.filter(pk__gt=audit_before).delete()
        AgentCommand.objects.filter(agent=agent).delete()
        Session.objects.filter(user=user).delete()
        agent.delete()
        template.delete()
        user.delete()


if __name__ == "__main__":
    main()

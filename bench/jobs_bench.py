"""Idle sweep and webhook delivery throughput on PostgreSQL (prints numbers; not a test).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> .venv/bin/python bench/jobs_bench.py

Everything runs in one transaction that is rolled back: the database is left as it was.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamspace.settings")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from agents_app.models import Agent  # noqa: E402
from sessions_app import sweeps  # noqa: E402
from sessions_app.models import Template  # noqa: E402
from streamspace.accounts.models import User  # noqa: E402
from tests.jobs.factories import bulk_sessions  # noqa: E402


class Rollback(Exception):
    pass


def main() -> None:
    assert connection.vendor == "postgresql", "set DATABASE_URL to a PostgreSQL database"
    call_command("migrate", verbosity=0)
    try:
        with transaction.atomic():
            user = User.objects.create_user("bench-idle", password="x")
            template = Template.objects.create(slug="bench-idle", display_name="b", image="b:1")
            agent = Agent.objects.create(agent_id="bench-idle", platform="docker", token_hash="bench-idle")
            bulk_sessions(user, template, agent, 10_000, idle_for_s=10, idle_timeout_s=3600)
            for label, extra_idle in (("10,000 running, none idle", 0), ("10,000 running + 500 idle", 500)):
                if extra_idle:
                    bulk_sessions(user, template, agent, extra_idle, idle_for_s=7200, idle_timeout_s=60)
                with CaptureQueriesContext(connection) as queries:
                    started = time.perf_counter()
                    result = sweeps.idle_sweep()
                    elapsed = time.perf_counter() - started
                print(
                    f"{label}: {elapsed * 1000:.1f} ms, {len(queries)} queries, "
                    f"hibernated {len(result.hibernated)}"
                    + (f" ({elapsed / extra_idle * 1000:.2f} ms a session)" if extra_idle else "")
                )
            raise Rollback
    except Rollback:
        pass


if __name__ == "__main__":
    main()

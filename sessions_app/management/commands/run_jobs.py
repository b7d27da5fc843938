"""``manage.py run_jobs``: the periodic jobs in-process, for the embedded default (no broker)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from streamspace import jobs


class Command(BaseCommand):
    help = (
        "Run the periodic jobs (idle sweep, command sweep, stale agents, quota reconciliation, "
        "webhook delivery, audit retention) on the beat schedule, in this process. "
        "With a Celery broker, run `celery -A streamspace worker -B` instead."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="Run each job once and exit.")
        parser.add_argument("--job", action="append", dest="names", help="Only this job (repeatable).")

    def handle(self, *args: Any, once: bool = False, names: list[str] | None = None, **options: Any) -> None:
        try:
            selected = jobs.configured_jobs(names)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if once:
            for name, result in jobs.run_once([job.name for job in selected]).items():
                self.stdout.write(f"{name}: {result}")
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        listing = ", ".join(f"{job.name} every {job.interval_s:g} s" for job in selected)
        self.stdout.write(f"run_jobs: {listing}")
        if not settings.CELERY_TASK_ALWAYS_EAGER:
            self.stdout.write("run_jobs: a Celery broker is configured; tasks it queues need a worker.")
        jobs.run_forever(stop, names=[job.name for job in selected])

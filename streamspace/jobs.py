"""The in-process job runner: ``settings.STREAMSPACE_PERIODIC_JOBS`` without Celery beat.

With a broker, ``celery -A streamspace worker -B`` runs these jobs from ``CELERY_BEAT_SCHEDULE``
(built from the same table). Without one, ``manage.py run_jobs`` (started by ``make run``)
calls :func:`run_forever`: each job runs on its interval in a thread of its own, never
overlapping itself, so a slow webhook never delays the idle sweep.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import close_old_connections
from django.utils.module_loading import import_string

from streamspace.audit import services as audit_services

log = logging.getLogger(__name__)


@shared_task(name="streamspace.jobs.prune_audit_log", ignore_result=True)
def prune_audit_log() -> int:
    """Delete audit events older than the retention period (``streamspace.audit.services.prune``)."""
    return audit_services.prune()


@dataclass
class Job:
    name: str
    task: str
    interval_s: float
    next_run: float = 0.0
    running: Future | None = None


def configured_jobs(names: Iterable[str] | None = None) -> list[Job]:
    """The periodic jobs of the settings table, optionally only ``names``."""
    table = settings.STREAMSPACE_PERIODIC_JOBS
    wanted = list(names) if names else list(table)
    unknown = set(wanted) - set(table)
    if unknown:
        raise ValueError(f"unknown job(s): {', '.join(sorted(unknown))}; known: {', '.join(table)}")
    return [Job(name, table[name][0], float(table[name][1])) for name in wanted]


def run_job(job: Job) -> Any:
    """Run one job's task in this thread (the task body, as a worker would) and log the outcome."""
    started = time.monotonic()
    try:
        # task names are their dotted paths; importing registers the task without a worker
        result = import_string(job.task)()
        log.debug("job %s done in %.3f s: %s", job.name, time.monotonic() - started, result)
        return result
    except Exception:
        log.exception("job %s failed", job.name)
        return None


def _run_in_thread(job: Job) -> Any:
    """``run_job`` in a pool thread, which owns its database connection."""
    close_old_connections()
    try:
        return run_job(job)
    finally:
        close_old_connections()


def run_once(names: Iterable[str] | None = None) -> dict[str, Any]:
    """Run every (or the named) job once, in order; returns each job's result."""
    return {job.name: run_job(job) for job in configured_jobs(names)}


def run_forever(
    stop: threading.Event | None = None,
    *,
    names: Iterable[str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    tick_s: float = 0.5,
) -> None:
    """Run the jobs on their intervals until ``stop`` is set. Each job first runs right away."""
    stop = stop or threading.Event()
    jobs = configured_jobs(names)
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="job") as pool:
        while not stop.is_set():
            now = clock()
            for job in jobs:
                if job.next_run > now or (job.running is not None and not job.running.done()):
                    continue
                job.next_run = now + job.interval_s
                job.running = pool.submit(_run_in_thread, job)
            stop.wait(tick_s)

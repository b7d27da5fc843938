"""A real Celery worker + beat (subprocesses) against real Redis and PostgreSQL.

- the idle sweep, scheduled by beat, hibernates a session without activity and leaves an
  active one running;
- a webhook receiver failing the first 3 deliveries gets the event exactly once, after 4
  logged attempts, correctly signed;
- a worker SIGKILLed mid-delivery loses nothing: the unacked message (acks_late) comes back
  from the broker and another worker completes the attempt with the same delivery id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.utils import timezone

from plugins_app import signing
from plugins_app.models import WebhookDelivery
from sessions_app.models import Session
from streamspace import events
from tests.support import ROOT
from tests.support.factories import make_session
from tests.support.plugin_factories import SECRET, webhook_plugin
from tests.support.processes import database_url
from tests.support.waits import wait_until
from tests.support.webhook_receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

CELERY = str(Path(sys.executable).with_name("celery"))


class Workers:
    """Starts and stops celery worker processes for one test, on a queue of its own."""

    def __init__(self, tmp_path: Path, queue: str):
        self.tmp_path, self.queue = tmp_path, queue
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL") or os.environ["REDIS_URL"],
            "CELERY_QUEUE": queue,
            "STREAMSPACE_IDLE_SWEEP_INTERVAL_S": "1",
            "WEBHOOK_DISPATCH_INTERVAL_S": "1",
            "WEBHOOK_RETRY_BASE_S": "1",
            "WEBHOOK_TIMEOUT_S": "2",
            "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            "CELERY_VISIBILITY_TIMEOUT_S": "5",
            "CELERY_UNACKED_RESTORE_INTERVAL_S": "1",
            "CELERY_UNACKED_RESTORE_THROTTLE": "1",
            "DATABASE_POOL": "false",
        }

    def start(self, *, beat: bool) -> subprocess.Popen:
        n = len(self.procs)
        log = self.tmp_path / f"worker-{n}.log"
        args = [CELERY, "-A", "streamspace", "worker", "-P", "threads", "-c", "4", "-Q", self.queue]
        args += ["-n", f"w{n}-{self.queue}@%h", "--without-gossip", "--without-mingle", "-l", "INFO"]
        if beat:
            args += ["-B", "-s", str(self.tmp_path / f"beat-{n}")]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(proc)
        self.logs.append(log)
        wait_until(lambda: b"ready." in log.read_bytes(), 60, what="the worker to start", logs=self.logs)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)


@pytest.fixture
def workers(tmp_path, settings) -> Iterator[Workers]:
    queue = f"test-{uuid.uuid4().hex[:10]}"
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    group = Workers(tmp_path, queue)
    yield group
    group.stop_all()
    import redis

    redis.Redis.from_url(group.env["CELERY_BROKER_URL"]).delete(queue)


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def test_beat_idle_sweep_hibernates_only_the_idle_session(workers, alice, template, docker_agent):
    idle = make_session(alice, template, docker_agent, idle_timeout_s=5, idle_for_s=1)
    active = make_session(alice, template, docker_agent, idle_timeout_s=5, idle_for_s=0)
    workers.start(beat=True)

    def idle_hibernated() -> bool:
        # the open viewer of ``active`` keeps refreshing its activity (what the proxy does)
        Session.objects.filter(pk=active.pk).update(last_activity=timezone.now())
        return Session.objects.get(pk=idle.pk).state == "hibernating"

    wait_until(idle_hibernated, 40, what="the idle session to hibernate", logs=workers.logs)
    hibernated_at = time.monotonic()
    # several more sweeps (every second) must leave the active session alone
    wait_until(
        lambda: idle_hibernated() and time.monotonic() - hibernated_at > 4, 10, what="more sweeps", logs=workers.logs
    )
    assert Session.objects.get(pk=active.pk).state == "running"
    assert Session.objects.get(pk=idle.pk).commands.filter(action="hibernate_session").count() == 1


def test_webhook_fails_three_times_then_arrives_exactly_once(workers, receiver_factory):
    receiver = receiver_factory(fail_first=3)
    plugin = webhook_plugin(receiver.url, events=["session.created"])
    workers.start(beat=True)
    events.emit("session.created", data={"session": {"id": "s-1", "name": "Firefox"}})

    assert receiver.wait_for(lambda r: len(r.processed) == 1, 60), workers.logs[0].read_text()[-3000:]
    wait_until(
        lambda: WebhookDelivery.objects.filter(plugin=plugin, status="succeeded").exists(),
        20,
        what="the log",
        logs=workers.logs,
    )
    attempts = list(WebhookDelivery.objects.filter(plugin=plugin).order_by("attempt"))
    assert [(a.attempt, a.status) for a in attempts] == [(1, "failed"), (2, "failed"), (3, "failed"), (4, "succeeded")]
    assert len(receiver.requests) == 4 and receiver.duplicates == 0
    body = next(iter(receiver.processed.values()))
    last = receiver.requests[-1]
    assert signing.verify(SECRET, body, last.headers["X-StreamSpace-Signature"])
    assert {r.headers["X-StreamSpace-Delivery"] for r in receiver.requests} == {str(attempts[0].delivery_id)}


def test_worker_killed_mid_delivery_loses_nothing(workers, receiver_factory):
    """No beat here: only the broker's redelivery of the unacked message can finish the job."""
    receiver = receiver_factory(hang_first=1)
    plugin = webhook_plugin(receiver.url, events=["user.created"])
    first = workers.start(beat=False)
    events.emit("user.created", data={"username": "carol"})

    assert receiver.wait_for(lambda r: len(r.requests) == 1, 30), "the first attempt never arrived"
    workers.kill(first)  # SIGKILL while the request is in flight: no ack, no result
    receiver.release.set()
    row = WebhookDelivery.objects.get(plugin=plugin)
    assert row.status == "sending"

    workers.start(beat=False)
    assert receiver.wait_for(lambda r: len(r.processed) == 1, 60), workers.logs[-1].read_text()[-3000:]
    wait_until(
        lambda: WebhookDelivery.objects.get(pk=row.pk).status == "succeeded", 20, what="the log", logs=workers.logs
    )
    assert WebhookDelivery.objects.filter(plugin=plugin).count() == 1  # the same attempt, taken over
    assert {r.headers["X-StreamSpace-Delivery"] for r in receiver.requests} == {str(row.delivery_id)}
    assert receiver.duplicates == 0

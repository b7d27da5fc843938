"""Scrape-time StreamSpace metrics (streamspace/metrics.py, agents_app/metrics.py,
plugins_app/metrics.py) that deploy/prometheus/alerts.yml relies on."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry

from agents_app.hub import presence
from agents_app.metrics import AgentCollector
from agents_app.models import Agent, AgentCommand, AgentInstance, CommandState
from agents_app.tokens import hash_token
from plugins_app.models import DeliveryStatus, Plugin, WebhookDelivery
from streamspace import metrics


@pytest.fixture
def scrape():
    """A fresh registry holding only the StreamSpace collector: ``scrape(name, labels)``."""
    reg = CollectorRegistry()
    metrics.register_collectors(reg)
    return reg.get_sample_value


def make_agent(agent_id: str, platform: str = "docker", **extra) -> Agent:
    return Agent.objects.create(agent_id=agent_id, platform=platform, token_hash=hash_token(agent_id), **extra)


@pytest.fixture
def live_instances():
    """Register instances in the real registry (Redis when REDIS_URL is set); removed after."""
    added: list[tuple[str, str, str]] = []

    def add(agent: Agent, instance_id: str, *, is_leader: bool) -> None:
        async_to_sync(presence.register_instance)(
            platform=agent.platform,
            agent_id=agent.agent_id,
            instance_id=instance_id,
            pod="cp-test",
            channel=f"chan-{instance_id}",
            is_leader=is_leader,
            metadata={"agent_id": agent.agent_id},
        )
        AgentInstance.objects.create(agent=agent, instance_id=instance_id, connected=True, is_leader=is_leader)
        added.append((agent.platform, agent.agent_id, instance_id))

    yield add
    for platform, agent_id, instance_id in added:
        async_to_sync(presence.unregister_instance)(platform=platform, agent_id=agent_id, instance_id=instance_id)


@pytest.mark.django_db
def test_agent_leaders_instances_stale_and_pending(scrape, live_instances):
    ha = make_agent("metrics-ha")
    live_instances(ha, "ha-a", is_leader=True)
    live_instances(ha, "ha-b", is_leader=False)
    # The database still believes this one connected, but it never heartbeats: stale.
    AgentInstance.objects.create(agent=ha, instance_id="ha-crashed", connected=True, is_leader=False)
    AgentInstance.objects.create(agent=ha, instance_id="ha-gone", connected=False)
    for state in (CommandState.PENDING, CommandState.SENT, CommandState.ACKED, CommandState.SUCCEEDED):
        AgentCommand.objects.create(agent=ha, action="start_session", state=state)
    leaderless = make_agent("metrics-leaderless", platform="kubernetes")
    live_instances(leaderless, "ll-a", is_leader=False)
    AgentCommand.objects.create(agent=leaderless, action="stop_session")
    make_agent("metrics-disabled", enabled=False)

    ha_labels = {"agent_id": "metrics-ha", "platform": "docker"}
    assert scrape("streamspace_agent_leaders", ha_labels) == 1
    assert scrape("streamspace_agent_instances", ha_labels) == 2
    assert scrape("streamspace_agent_stale_instances", ha_labels) == 1
    assert scrape("streamspace_agent_pending_commands", ha_labels) == 2  # pending + sent, not acked/done

    ll_labels = {"agent_id": "metrics-leaderless", "platform": "kubernetes"}
    assert scrape("streamspace_agent_leaders", ll_labels) == 0
    assert scrape("streamspace_agent_instances", ll_labels) == 1
    assert scrape("streamspace_agent_pending_commands", ll_labels) == 1

    assert scrape("streamspace_agent_leaders", {"agent_id": "metrics-disabled", "platform": "docker"}) is None
    assert scrape("streamspace_metrics_collector_up", {"collector": "agents"}) == 1


@pytest.mark.django_db
def test_agent_without_any_replica_reports_zero_leaders(scrape):
    make_agent("metrics-never-connected")
    labels = {"agent_id": "metrics-never-connected", "platform": "docker"}
    assert scrape("streamspace_agent_leaders", labels) == 0
    assert scrape("streamspace_agent_instances", labels) == 0
    assert scrape("streamspace_agent_stale_instances", labels) == 0


@pytest.mark.django_db
def test_webhook_attempts_exhausted_and_oldest_due(scrape, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    hook = Plugin.objects.create(name="metrics-hook", type="webhook")
    other = Plugin.objects.create(name="metrics-other", type="webhook")
    now = timezone.now()

    def delivery(plugin, status, attempt=1, **extra):
        return WebhookDelivery.objects.create(
            plugin=plugin, event="session.started", status=status, attempt=attempt, **extra
        )

    delivery(hook, DeliveryStatus.SUCCEEDED)
    delivery(hook, DeliveryStatus.FAILED, 1)
    delivery(hook, DeliveryStatus.FAILED, 2)
    delivery(hook, DeliveryStatus.FAILED, 3)  # the last allowed attempt: the event is given up
    delivery(hook, DeliveryStatus.FAILED, 3, manual=True)  # an admin's redelivery is not an exhausted event
    delivery(other, DeliveryStatus.SUCCEEDED)
    delivery(other, DeliveryStatus.PENDING, next_attempt_at=now - timedelta(seconds=120))
    delivery(other, DeliveryStatus.PENDING, next_attempt_at=now + timedelta(seconds=600))  # not due yet

    assert scrape("streamspace_webhook_delivery_attempts_total", {"plugin": "metrics-hook", "status": "failed"}) == 4
    assert scrape("streamspace_webhook_delivery_attempts_total", {"plugin": "metrics-hook", "status": "succeeded"}) == 1
    assert (
        scrape("streamspace_webhook_delivery_attempts_total", {"plugin": "metrics-other", "status": "succeeded"}) == 1
    )
    assert (
        scrape("streamspace_webhook_delivery_attempts_total", {"plugin": "metrics-other", "status": "pending"}) is None
    )
    assert scrape("streamspace_webhook_deliveries_exhausted_total", {"plugin": "metrics-hook"}) == 1
    assert 119 <= scrape("streamspace_webhook_oldest_due_seconds") < 180


@pytest.mark.django_db
def test_no_due_webhook_means_zero_backlog_age(scrape):
    assert scrape("streamspace_webhook_oldest_due_seconds") == 0


@pytest.mark.django_db
def test_dependency_up_reports_an_unreachable_redis(scrape, settings):
    assert scrape("streamspace_dependency_up", {"dependency": "database"}) == 1
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    assert scrape("streamspace_dependency_up", {"dependency": "redis"}) == 0


@pytest.mark.django_db
def test_a_failing_part_is_reported_and_the_scrape_still_succeeds(monkeypatch):
    metrics.register_collectors()  # the app registry did this already; a second call is a no-op

    def broken(self):
        raise RuntimeError("database went away")

    monkeypatch.setattr(AgentCollector, "collect", broken)
    response = Client().get("/metrics")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'streamspace_metrics_collector_up{collector="agents"} 0.0' in body
    assert 'streamspace_metrics_collector_up{collector="webhooks"} 1.0' in body
    assert "streamspace_webhook_oldest_due_seconds" in body


def test_register_collectors_is_idempotent():
    reg = CollectorRegistry()
    first = metrics.register_collectors(reg)
    assert metrics.register_collectors(reg) is first
    # the global registry got it from AgentsAppConfig.ready(), exactly once
    assert metrics.register_collectors() is metrics.register_collectors(REGISTRY)
    assert sum(isinstance(c, metrics.StreamSpaceCollector) for c in REGISTRY._collector_to_names) == 1


def test_describe_does_not_touch_the_database():
    # Registration calls describe(); it runs before migrations and in processes without a DB.
    names = {family.name for family in metrics.StreamSpaceCollector().describe()}
    assert {
        "streamspace_agent_leaders",
        "streamspace_agent_stale_instances",
        "streamspace_webhook_delivery_attempts",
        "streamspace_celery_queue_messages",
        "streamspace_dependency_up",
    } <= names


@pytest.mark.postgres
@pytest.mark.django_db
def test_celery_queue_messages_counts_every_priority_list(scrape, settings):
    import redis

    url = os.environ["REDIS_URL"]
    settings.CELERY_BROKER_URL = url
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_TASK_DEFAULT_QUEUE = "streamspace-metrics-test"
    client = redis.Redis.from_url(url)
    keys = ["streamspace-metrics-test", "streamspace-metrics-test\x06\x166"]
    try:
        client.rpush(keys[0], "a", "b", "c")
        client.rpush(keys[1], "d")
        assert scrape("streamspace_celery_queue_messages", {"queue": "streamspace-metrics-test"}) == 4
    finally:
        client.delete(*keys)
        client.close()


@pytest.mark.django_db
def test_no_queue_gauge_without_a_redis_broker(scrape, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    assert scrape("streamspace_celery_queue_messages", {"queue": settings.CELERY_TASK_DEFAULT_QUEUE}) is None
    assert scrape("streamspace_metrics_collector_up", {"collector": "celery"}) == 1

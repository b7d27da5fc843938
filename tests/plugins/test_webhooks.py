"""Webhook delivery: signatures, retries with backoff, the attempt log, SSRF refusal, redelivery."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from plugins_app import delivery, http, signing
from plugins_app.models import WebhookDelivery
from streamspace import events
from tests.support.plugin_factories import SECRET, webhook_plugin

pytestmark = pytest.mark.django_db


def drain(max_rounds: int = 20) -> None:
    """Run the due-delivery dispatch until nothing is due (no broker: attempts run inline)."""
    for _ in range(max_rounds):
        if delivery.dispatch_due() == 0:
            return
    raise AssertionError("deliveries still due after 20 rounds")


def test_signature_round_trip_and_tampering():
    body = b'{"a":1}'
    header = signing.sign("s3cret", body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert signing.verify("s3cret", body, header, now=1_700_000_100)
    assert not signing.verify("s3cret", body + b" ", header, now=1_700_000_100)
    assert not signing.verify("other", body, header, now=1_700_000_100)
    assert not signing.verify("s3cret", body, header, now=1_700_009_999)  # replay window
    assert not signing.verify("s3cret", body, "garbage", now=1_700_000_100)


def test_fails_three_times_then_succeeds_once(receiver_factory, settings):
    settings.WEBHOOK_RETRY_BASE_S = 0
    receiver = receiver_factory(fail_first=3)
    plugin = webhook_plugin(receiver.url, events=["session.created"])
    events.emit("session.created", data={"session": {"id": "abc", "name": "Firefox"}})
    drain()

    attempts = list(WebhookDelivery.objects.filter(plugin=plugin).order_by("attempt"))
    assert [(a.attempt, a.status, a.response_code) for a in attempts] == [
        (1, "failed", 500),
        (2, "failed", 500),
        (3, "failed", 500),
        (4, "succeeded", 200),
    ]
    assert len({a.delivery_id for a in attempts}) == 1
    assert all(a.latency_ms is not None for a in attempts) and attempts[0].error.startswith("HTTP 500")
    assert len(receiver.requests) == 4 and len(receiver.processed) == 1 and receiver.duplicates == 0
    delivery_ids = {r.headers["X-StreamSpace-Delivery"] for r in receiver.requests}
    assert delivery_ids == {str(attempts[0].delivery_id)}
    last = receiver.requests[-1]
    assert last.headers["X-StreamSpace-Event"] == "session.created"
    assert signing.verify(SECRET, last.body, last.headers["X-StreamSpace-Signature"])
    document = json.loads(last.body)
    assert document["event"] == "session.created" and document["id"] == str(attempts[0].delivery_id)
    assert document["data"]["session"]["name"] == "Firefox"


def test_backoff_doubles_and_attempts_are_bounded(receiver_factory, settings):
    settings.WEBHOOK_RETRY_BASE_S = 30
    settings.WEBHOOK_MAX_ATTEMPTS = 4
    receiver = receiver_factory(fail_first=100)
    plugin = webhook_plugin(receiver.url)
    events.emit("session.created", data={})
    delays = []
    for _ in range(10):
        drain()
        pending = WebhookDelivery.objects.filter(plugin=plugin, status="pending").first()
        if pending is None:
            break
        previous = WebhookDelivery.objects.get(plugin=plugin, attempt=pending.attempt - 1)
        delays.append(round((pending.next_attempt_at - previous.completed_at).total_seconds()))
        assert delivery.dispatch_due() == 0  # not due yet
        WebhookDelivery.objects.filter(pk=pending.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert delays == [30, 60, 120]
    assert WebhookDelivery.objects.filter(plugin=plugin).count() == 4
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"failed"}
    assert len(receiver.requests) == 4


def test_unsubscribed_and_disabled_plugins_get_nothing(receiver_factory):
    receiver = receiver_factory()
    webhook_plugin(receiver.url, events=["session.stopped"], name="other-event")
    disabled = webhook_plugin(receiver.url, events=["session.created"], name="disabled")
    disabled.enabled = False
    disabled.save()
    events.emit("session.created", data={})
    drain()
    assert WebhookDelivery.objects.count() == 0 and receiver.requests == []


def test_subscriptions_are_cached_and_every_plugin_write_refreshes_them(django_assert_num_queries):
    """Every state change emits an event: the subscription lookup must not be a query each
    time, and must still see a plugin the moment it is added, changed or removed."""
    hook = webhook_plugin(events=["session.started"], name="cached")
    assert [p.pk for p in delivery.subscribed_plugins("session.started")] == [hook.pk]
    with django_assert_num_queries(0):
        assert [p.pk for p in delivery.subscribed_plugins("session.started")] == [hook.pk]
        assert delivery.subscribed_plugins("session.created") == []
    hook.events = ["session.created"]
    hook.save()  # a direct ORM write (admin, shell) refreshes too
    assert delivery.subscribed_plugins("session.started") == []
    assert [p.pk for p in delivery.subscribed_plugins("session.created")] == [hook.pk]
    hook.delete()
    assert delivery.subscribed_plugins("session.created") == []


def test_a_claimed_attempt_is_not_made_twice(receiver_factory):
    receiver = receiver_factory()
    plugin = webhook_plugin(receiver.url)
    events.emit("session.created", data={})
    row = WebhookDelivery.objects.get(plugin=plugin)
    assert delivery.deliver(row.pk) == "succeeded"
    assert delivery.deliver(row.pk) == "skipped"  # the task delivered twice by the broker
    assert len(receiver.requests) == 1


def test_an_expired_claim_is_taken_over_with_the_same_delivery_id(receiver_factory):
    receiver = receiver_factory()
    plugin = webhook_plugin(receiver.url)
    events.emit("session.created", data={})
    row = WebhookDelivery.objects.get(plugin=plugin)
    # a worker claimed it and died
    WebhookDelivery.objects.filter(pk=row.pk).update(
        status="sending", claimed_until=timezone.now() + timedelta(minutes=1)
    )
    assert delivery.dispatch_due() == 0
    WebhookDelivery.objects.filter(pk=row.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert delivery.dispatch_due() == 1
    row.refresh_from_db()
    assert row.status == "succeeded" and row.attempt == 1
    assert receiver.requests[0].headers["X-StreamSpace-Delivery"] == str(row.delivery_id)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost:8000/x",
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://0.0.0.0/x",
        "ftp://example.com/x",
        "http://user:pw@example.com/x",
        "http:///x",
    ],
)
def test_outbound_guard_refuses_internal_targets(url, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = []
    with pytest.raises(http.OutboundURLError):
        http.validate_url(url)


def test_guard_checks_every_resolved_address(monkeypatch, settings):
    import ipaddress

    settings.WEBHOOK_ALLOWED_HOSTS = []
    monkeypatch.setattr(
        http, "resolve", lambda host, port: [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("10.0.0.5")]
    )
    with pytest.raises(http.OutboundURLError, match="10.0.0.5"):
        http.validate_url("https://rebind.example.com/hook")


def test_allowed_hosts_permit_internal_targets(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    target = http.validate_url("http://127.0.0.1:9/hook")
    assert str(target.address) == "127.0.0.1" and target.port == 9


def test_refused_url_is_logged_and_not_retried(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = []
    plugin = webhook_plugin("http://127.0.0.1:9/hook")
    events.emit("session.created", data={})
    drain()
    attempts = list(WebhookDelivery.objects.filter(plugin=plugin))
    assert len(attempts) == 1 and attempts[0].status == "failed" and attempts[0].error.startswith("refused:")


def test_network_error_is_retried(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.WEBHOOK_RETRY_BASE_S = 0
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    plugin = webhook_plugin("http://127.0.0.1:9/hook")  # nothing listens on the discard port
    events.emit("session.created", data={})
    drain()
    attempts = list(WebhookDelivery.objects.filter(plugin=plugin).order_by("attempt"))
    assert [a.status for a in attempts] == ["failed", "failed"]
    assert "ConnectError" in attempts[0].error and attempts[0].response_code is None


def test_redeliver_makes_one_manual_attempt(receiver_factory, settings, admin_user):
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    receiver = receiver_factory(fail_first=1)
    plugin = webhook_plugin(receiver.url)
    events.emit("session.created", data={})
    drain()
    first = WebhookDelivery.objects.get(plugin=plugin)
    assert first.status == "failed"
    again = delivery.redeliver(plugin, first.delivery_id, actor=admin_user)
    with pytest.raises(delivery.RedeliveryRefused):
        delivery.redeliver(plugin, first.delivery_id, actor=admin_user)
    drain()
    again.refresh_from_db()
    assert (again.attempt, again.status, again.manual, again.requested_by) == (2, "succeeded", True, admin_user)
    assert receiver.requests[-1].headers["X-StreamSpace-Delivery"] == str(first.delivery_id)

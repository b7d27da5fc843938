"""Django admin pages for plugins: validated config, delivery log inline, redeliver action."""

from __future__ import annotations

import json

import pytest

from plugins_app import secrets
from plugins_app.models import Plugin, WebhookDelivery
from streamspace.audit.models import AuditEvent
from tests.support.plugin_factories import failed_delivery, webhook_plugin

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_web(client, admin_user):
    client.force_login(admin_user)
    return client


def _form(**overrides):
    data = {
        "name": "ci",
        "display_name": "",
        "type": "webhook",
        "enabled": "on",
        "config": json.dumps({"url": "https://93.184.215.14/h", "events": ["session.created"]}),
        "new_secrets": json.dumps({"secret": "x" * 20}),
        "deliveries-TOTAL_FORMS": "0",
        "deliveries-INITIAL_FORMS": "0",
    }
    data.update(overrides)
    return data


def test_add_plugin_is_validated_and_audited(admin_web):
    bad = admin_web.post("/admin/plugins_app/plugin/add/", _form(config=json.dumps({"url": "http://10.0.0.1/"})))
    assert bad.status_code == 200 and not Plugin.objects.exists()
    assert b"errornote" in bad.content or b"errorlist" in bad.content
    good = admin_web.post("/admin/plugins_app/plugin/add/", _form())
    assert good.status_code == 302, good.content[:2000]
    plugin = Plugin.objects.get(name="ci")
    assert secrets.read(plugin) == {"secret": "x" * 20} and plugin.events == ["session.created"]
    assert AuditEvent.objects.filter(action="plugin.install").exists()


def test_change_page_shows_delivery_log_without_secret(admin_web):
    plugin = webhook_plugin()
    failed_delivery(plugin)
    page = admin_web.get(f"/admin/plugins_app/plugin/{plugin.pk}/change/")
    assert page.status_code == 200
    assert b"whsec-" not in page.content and b"failed" in page.content


def test_redeliver_action(admin_web):
    plugin = webhook_plugin()
    attempt = failed_delivery(plugin)
    response = admin_web.post(
        "/admin/plugins_app/webhookdelivery/", {"action": "redeliver", "_selected_action": [attempt.pk]}
    )
    assert response.status_code == 302
    again = WebhookDelivery.objects.filter(delivery_id=attempt.delivery_id).order_by("-attempt").first()
    assert again.attempt == 2 and again.manual and again.status == "pending"

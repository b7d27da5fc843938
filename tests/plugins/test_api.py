"""The plugins admin API: install, configure, enable/disable, remove, delivery log, redeliver."""

from __future__ import annotations

import pytest

from plugins_app import secrets
from plugins_app.models import Plugin, WebhookDelivery
from streamspace.audit.models import AuditEvent
from tests.support.plugin_factories import failed_delivery, webhook_plugin

pytestmark = pytest.mark.django_db

HOOK = {"url": "https://93.184.215.14/hook", "secret": "s" * 24, "events": ["session.created", "session.failed"]}


def test_install_webhook_keeps_secret_encrypted_and_hidden(admin_client):
    response = admin_client.post("/api/v1/plugins", {"name": "ci", "type": "webhook", "config": HOOK}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["config"] == {"url": HOOK["url"], "events": HOOK["events"]}
    assert body["secret_fields_set"] == ["secret"] and body["events"] == HOOK["events"]
    assert "s" * 24 not in str(admin_client.get(f"/api/v1/plugins/{body['id']}").json())
    plugin = Plugin.objects.get(pk=body["id"])
    assert "s" * 24 not in plugin.secrets_encrypted and secrets.read(plugin) == {"secret": "s" * 24}
    assert AuditEvent.objects.filter(action="plugin.install", target_id=str(plugin.pk)).exists()


@pytest.mark.parametrize(
    "config,code",
    [
        ({"url": "https://93.184.215.14/h", "events": ["session.created"]}, "invalid_config"),  # no secret
        ({**HOOK, "events": ["session.exploded"]}, "invalid_config"),
        ({**HOOK, "url": "file:///etc/passwd"}, "invalid_config"),
        ({**HOOK, "extra": 1}, "invalid_config"),
        ({**HOOK, "headers": {"Host": "evil"}}, "invalid_config"),
        ({**HOOK, "url": "http://169.254.169.254/latest"}, "url_not_allowed"),
        ({**HOOK, "url": "http://localhost:8000/admin"}, "url_not_allowed"),
    ],
)
def test_invalid_webhook_config_is_400(admin_client, config, code):
    response = admin_client.post("/api/v1/plugins", {"name": "bad", "type": "webhook", "config": config}, format="json")
    assert response.status_code == 400 and response.json()["code"] == code, response.json()
    assert not Plugin.objects.exists()


def test_duplicate_name_is_409(admin_client):
    webhook_plugin(name="ci")
    response = admin_client.post("/api/v1/plugins", {"name": "ci", "type": "webhook", "config": HOOK}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "plugin_exists"


def test_patch_config_keeps_omitted_secret_and_disable_enable(admin_client):
    plugin = webhook_plugin()
    new = {"url": "https://93.184.215.14/other", "events": ["session.stopped"]}
    response = admin_client.patch(f"/api/v1/plugins/{plugin.pk}", {"config": new}, format="json")
    assert response.status_code == 200, response.json()
    plugin.refresh_from_db()
    assert plugin.events == ["session.stopped"] and secrets.read(plugin)["secret"].startswith("whsec-")
    assert (
        admin_client.patch(f"/api/v1/plugins/{plugin.pk}", {"enabled": False}, format="json").json()["enabled"] is False
    )
    assert AuditEvent.objects.filter(action="plugin.disable").exists()
    bad = admin_client.patch(f"/api/v1/plugins/{plugin.pk}", {"config": {"events": []}}, format="json")
    assert bad.status_code == 400


def test_delete_removes_plugin_and_log(admin_client):
    plugin = webhook_plugin()
    failed_delivery(plugin)
    assert admin_client.delete(f"/api/v1/plugins/{plugin.pk}").status_code == 204
    assert not Plugin.objects.exists() and not WebhookDelivery.objects.exists()
    assert AuditEvent.objects.filter(action="plugin.remove").exists()


def test_delivery_log_and_redeliver(admin_client):
    plugin = webhook_plugin()
    attempt = failed_delivery(plugin)
    log = admin_client.get(f"/api/v1/plugins/{plugin.pk}/deliveries").json()
    assert log["count"] == 1 and log["results"][0]["status"] == "failed"
    url = f"/api/v1/plugins/{plugin.pk}/deliveries/{attempt.delivery_id}/redeliver"
    response = admin_client.post(url, {}, format="json")
    assert response.status_code == 202 and response.json()["manual"] is True and response.json()["attempt"] == 2
    assert admin_client.post(url, {}, format="json").json()["code"] == "delivery_pending"
    other = webhook_plugin(name="other")
    wrong_plugin = f"/api/v1/plugins/{other.pk}/deliveries/{attempt.delivery_id}/redeliver"
    assert admin_client.post(wrong_plugin, {}, format="json").status_code == 404


def test_install_integrations_and_theme(admin_client):
    slack = {"kind": "slack", "url": "https://93.184.215.14/services/T/B/x", "events": ["session.failed"]}
    response = admin_client.post(
        "/api/v1/plugins", {"name": "slack", "type": "integration", "config": slack}, format="json"
    )
    assert response.status_code == 201 and response.json()["secret_fields_set"] == ["url"]
    assert "url" not in response.json()["config"]
    mail = {"kind": "email", "to": ["ops@example.com"], "events": ["quota.exceeded"]}
    assert (
        admin_client.post(
            "/api/v1/plugins", {"name": "mail", "type": "integration", "config": mail}, format="json"
        ).status_code
        == 201
    )
    bad_mail = {**mail, "url": "https://x.example.com"}
    assert (
        admin_client.post(
            "/api/v1/plugins", {"name": "m2", "type": "integration", "config": bad_mail}, format="json"
        ).status_code
        == 400
    )
    theme = {"product_name": "Acme Desktops", "colors": {"primary": "#ff0000"}}
    assert (
        admin_client.post(
            "/api/v1/plugins", {"name": "acme", "type": "theme", "config": theme}, format="json"
        ).status_code
        == 201
    )
    evil = {"colors": {"primary": "red;}</style><script>"}}
    assert (
        admin_client.post(
            "/api/v1/plugins", {"name": "evil", "type": "theme", "config": evil}, format="json"
        ).status_code
        == 400
    )


def test_install_extension_validates_against_its_schema(admin_client):
    available = admin_client.get("/api/v1/plugins/available").json()
    assert {"name": "example", "ok": True} in [{"name": a["name"], "ok": a["ok"]} for a in available]
    bad = admin_client.post(
        "/api/v1/plugins", {"name": "example", "type": "extension", "config": {"greeting": 5}}, format="json"
    )
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_config"
    missing = admin_client.post("/api/v1/plugins", {"name": "nope", "type": "extension"}, format="json")
    assert missing.status_code == 400 and missing.json()["code"] == "plugin_unavailable"
    ok = admin_client.post(
        "/api/v1/plugins", {"name": "example", "type": "extension", "config": {"greeting": "hi"}}, format="json"
    )
    assert ok.status_code == 201, ok.json()
    assert ok.json()["config"] == {"greeting": "hi", "menu_label": "Example"} and ok.json()["version"] == "1.0.0"
    assert ok.json()["available"] == {"ok": True, "error": ""}


def test_non_admins_are_refused(alice_client, operator_client):
    assert alice_client.get("/api/v1/plugins").status_code == 403
    assert operator_client.post("/api/v1/plugins", {"name": "x", "type": "theme"}, format="json").status_code == 403

"""Theme plugins (cached theme, context processors) and the Slack / e-mail integrations."""

from __future__ import annotations

import json

import pytest
from django.core import mail
from django.template import engines
from django.test import RequestFactory

from plugins_app import secrets, theme
from plugins_app.context_processors import menu as menu_context
from plugins_app.models import Plugin, WebhookDelivery
from plugins_app.services import install_plugin, update_plugin
from streamspace import events
from streamspace.portal.context_processors import portal as portal_context
from tests.plugins.test_webhooks import drain

pytestmark = pytest.mark.django_db


def test_default_theme_then_plugin_theme_cached_and_invalidated(django_assert_num_queries):
    assert theme.current_theme() == theme.Theme(product_name="StreamSpace", logo_url="", colors=theme.DEFAULT_COLORS)
    plugin = install_plugin(
        name="acme",
        type="theme",
        config={"product_name": "Acme", "logo_url": "/static/acme.svg", "colors": {"primary": "#123456"}},
    )
    assert theme.current_theme().product_name == "Acme"
    with django_assert_num_queries(0):
        current = theme.current_theme()
    assert current.logo_url == "/static/acme.svg"
    assert current.colors == {**theme.DEFAULT_COLORS, "primary": "#123456"}
    update_plugin(plugin, enabled=False)
    assert theme.current_theme() == theme.Theme()


def test_the_context_processors_give_the_theme_and_the_plugin_menu(alice):
    install_plugin(name="acme", type="theme", config={"product_name": "Acme Cloud"})
    request = RequestFactory().get("/")
    request.user = alice
    context = portal_context(request) | menu_context(request)
    assert context["theme"].product_name == "Acme Cloud"
    assert list(context["plugin_menu"]) == []
    rendered = engines["django"].from_string("{{ theme.product_name }}").render(context)
    assert rendered == "Acme Cloud"


def test_slack_integration_posts_a_message(receiver_factory, settings):
    receiver = receiver_factory()
    plugin = install_plugin(
        name="slack",
        type="integration",
        config={"kind": "slack", "url": receiver.url, "events": ["session.failed"], "channel": "#ops"},
    )
    assert secrets.read(plugin) == {"url": receiver.url} and "url" not in plugin.config
    events.emit(
        "session.failed", data={"session": {"id": "s1", "name": "Firefox", "user": "alice", "status_message": "boom"}}
    )
    drain()
    message = json.loads(receiver.requests[0].body)
    assert message["channel"] == "#ops"
    assert "session.failed" in message["text"] and "Firefox" in message["text"] and "boom" in message["text"]
    assert WebhookDelivery.objects.get().status == "succeeded"


def test_email_integration_sends_mail(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    install_plugin(
        name="mail",
        type="integration",
        config={"kind": "email", "to": ["ops@example.com"], "events": ["quota.exceeded"]},
    )
    events.emit("quota.exceeded", actor=None, data={"limit": "max_sessions"})
    drain()
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ops@example.com"] and "quota.exceeded" in mail.outbox[0].subject
    assert WebhookDelivery.objects.get().status == "succeeded"
    assert Plugin.objects.get().events == ["quota.exceeded"]

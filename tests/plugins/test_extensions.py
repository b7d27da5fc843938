"""Extension plugins: discovery, version bounds, event hooks, API routes, menu entries."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import streamspace_example_plugin as example

from plugins_app import registry
from plugins_app.extension import Extension
from plugins_app.services import install_plugin, update_plugin
from streamspace import events
from tests.support.clients import client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def installed(admin_user):
    example.RECEIVED.clear()
    return install_plugin(name="example", type="extension", config={"greeting": "hej"}, actor=admin_user)


def test_every_event_reaches_the_enabled_extension(installed):
    for name in events.EVENTS:
        events.emit(name, data={"probe": name})
    assert [e["event"] for e in example.RECEIVED] == list(events.EVENTS)
    assert example.RECEIVED[0]["data"] == {"probe": events.EVENTS[0]}


def test_disabled_extension_gets_nothing_and_its_routes_404(installed, alice):
    update_plugin(installed, enabled=False)
    events.emit("session.created", data={})
    assert list(example.RECEIVED) == []
    assert client_for(alice).get("/api/v1/plugins/example/").status_code == 404
    assert client_for(None).get("/api/v1/plugins/example/").status_code == 401


def test_extension_routes_and_menu(installed, alice):
    client = client_for(alice)
    assert client.get("/api/v1/plugins/example/").json() == {"plugin": "example", "greeting": "hej"}
    events.emit("user.login", data={"username": "alice"})
    assert client.get("/api/v1/plugins/example/events").json() == {"events": ["user.login"]}
    assert registry.menu_entries(alice) == [
        {"label": "Example", "url": "/api/v1/plugins/example/", "icon": "🧩", "plugin": "example"}
    ]
    assert registry.menu_entries(SimpleNamespace(is_authenticated=False)) == []


def test_a_failing_handler_does_not_stop_the_others(installed, monkeypatch):
    def boom(envelope, config):
        raise RuntimeError("bad plugin")

    monkeypatch.setattr(example.ExamplePlugin, "handle_event", lambda self, e, c: boom(e, c))
    events.emit("session.created", data={})  # logged, not raised


def _entry_point(obj, name="probe"):
    return SimpleNamespace(name=name, dist=SimpleNamespace(name="probe-dist"), load=lambda: obj)


def test_version_bounds_and_bad_packages_are_reported():
    class TooNew(Extension):
        name = "toonew"
        requires_streamspace = ">=2"

    class BadSchema(Extension):
        name = "badschema"
        config_schema = {"type": "nonsense"}

    class BadDefaults(Extension):
        name = "baddefaults"
        config_schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
        default_settings = {"n": "x"}

    assert "needs StreamSpace >=2" in registry._load(_entry_point(TooNew)).error
    assert "invalid config schema" in registry._load(_entry_point(BadSchema)).error
    assert "default settings" in registry._load(_entry_point(BadDefaults)).error
    assert "not a plugins_app.extension.Extension" in registry._load(_entry_point(object())).error

    def explode():
        raise ImportError("missing dependency")

    broken = SimpleNamespace(name="broken", dist=None, load=explode)
    assert "failed to load" in registry._load(broken).error

"""The operator panel: agents, all sessions with bulk stop, templates editor, quotas, audit."""

from __future__ import annotations

import pytest

from plugins_app.models import Plugin, WebhookDelivery
from sessions_app.models import Session, SessionState, Template, UserQuota
from streamspace.audit.models import AuditEvent
from tests.portal.conftest import make_session

pytestmark = pytest.mark.django_db

GARBAGE = {"page": "abc", "state": "\x00", "user": "\x00" * 3, "q": "%" * 300, "action": "\x00", "plugin": "'"}


@pytest.mark.parametrize(
    "path", ["/ops/", "/ops/agents/", "/ops/sessions/", "/ops/users/", "/ops/plugins/", "/ops/audit/"]
)
def test_garbage_query_parameters_are_harmless(admin_browser, path):
    assert admin_browser.get(path, GARBAGE).status_code == 200
    assert admin_browser.get(path, {"page": "999999"}).status_code == 200


def test_agents_page_shows_leader_and_followers(operator_browser, local_agent, alice, demo_template):
    make_session(alice, demo_template, local_agent)
    page = operator_browser.get("/ops/agents/").content.decode()
    assert 'data-agent="local-1"' in page
    assert 'data-instance="local-1-a" data-role="leader" data-connected="true"' in page
    assert 'data-instance="local-1-b" data-role="follower" data-connected="true"' in page
    assert "1 active session " in page and "cp-1" in page


def test_all_sessions_filters(operator_browser, alice, bob, demo_template, template, local_agent):
    a = make_session(alice, demo_template, local_agent, name="alpha")
    b = make_session(bob, template, None, name="beta", state=SessionState.HIBERNATED)
    page = operator_browser.get("/ops/sessions/").content.decode()
    assert str(a.pk) in page and str(b.pk) in page
    page = operator_browser.get("/ops/sessions/", {"user": "bob"}).content.decode()
    assert str(a.pk) not in page and str(b.pk) in page
    page = operator_browser.get("/ops/sessions/", {"state": "hibernated", "template": "xfce"}).content.decode()
    assert str(b.pk) in page and str(a.pk) not in page
    page = operator_browser.get("/ops/sessions/", {"agent": "local-1", "q": "alp"}).content.decode()
    assert str(a.pk) in page and str(b.pk) not in page


def test_bulk_stop(operator_browser, operator, alice, bob, demo_template, local_agent):
    a = make_session(alice, demo_template, local_agent)
    b = make_session(bob, demo_template, local_agent)
    c = make_session(bob, demo_template, local_agent)
    response = operator_browser.post("/ops/sessions/?state=active", {"sessions": [str(a.pk), str(b.pk)]}, follow=True)
    assert "Stop requested for 2 session(s)." in response.content.decode()
    states = dict(Session.objects.values_list("pk", "state"))
    assert states[a.pk] == states[b.pk] == SessionState.STOPPING and states[c.pk] == SessionState.RUNNING
    assert AuditEvent.objects.filter(action="session.stop", actor=operator).count() == 2


@pytest.mark.parametrize("body", [{}, {"sessions": "nope"}, {"sessions": ["\x00"]}, {"sessions": ["1"] * 501}])
def test_bulk_stop_rejects_garbage(operator_browser, body):
    response = operator_browser.post("/ops/sessions/", body, follow=True)
    assert response.status_code == 200 and 'class="message message--error"' in response.content.decode()


def test_bulk_stop_is_operator_only(alice_browser, alice, demo_template, local_agent):
    session = make_session(alice, demo_template, local_agent)
    assert alice_browser.post("/ops/sessions/", {"sessions": [str(session.pk)]}).status_code == 403
    assert Session.objects.get(pk=session.pk).state == SessionState.RUNNING


TEMPLATE_FORM = {
    "slug": "notes",
    "display_name": "Notes",
    "description": "A notes app",
    "category": "Office",
    "icon": "📝",
    "platform": "",
    "image": "registry.local/notes:1",
    "command": "[]",
    "default_cpu_millicores": "500",
    "default_memory_mb": "512",
    "streaming_port": "8080",
    "idle_timeout_s": "",
    "env": '{"LANG": "C.UTF-8"}',
    "volume_mounts": "[]",
    "tags": '["office"]',
    "enabled": "on",
}


def test_template_editor_creates_and_edits(operator_browser, operator):
    response = operator_browser.post("/ops/templates/new", TEMPLATE_FORM)
    assert response.status_code == 302, response.content.decode()[:2000]
    template = Template.objects.get(slug="notes")
    assert template.env == {"LANG": "C.UTF-8"} and template.tags == ["office"]
    assert AuditEvent.objects.filter(action="template.create", actor=operator).exists()
    assert "Notes" in operator_browser.get("/ops/templates/").content.decode()
    edit = operator_browser.get("/ops/templates/notes").content.decode()
    assert 'value="registry.local/notes:1"' in edit
    response = operator_browser.post("/ops/templates/notes", {**TEMPLATE_FORM, "display_name": "Notes 2"})
    assert response.status_code == 302 and Template.objects.get(slug="notes").display_name == "Notes 2"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"env": "{not json"}, "Enter a valid JSON"),
        ({"env": '{"A": 1}'}, "Must be an object of string values."),
        ({"platform": "local", "command": "[]"}, "A local template needs a command."),
        ({"volume_mounts": '[{"name": "x", "mount_path": "relative"}]'}, "absolute"),
        ({"default_cpu_millicores": "-5"}, "greater than or equal"),
        ({"slug": "no spaces"}, "slug"),
    ],
)
def test_template_editor_shows_validation_errors(operator_browser, changes, message):
    response = operator_browser.post("/ops/templates/new", {**TEMPLATE_FORM, **changes})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Template.objects.filter(slug="notes").exists()


def test_users_page_and_quota_editing(admin_browser, admin_user, alice, demo_template, local_agent):
    from django.contrib.auth.models import Group

    from sessions_app.models import GroupQuota

    staff = Group.objects.create(name="staff")
    GroupQuota.objects.create(group=staff, max_sessions=7)
    alice.groups.add(staff)
    make_session(alice, demo_template, local_agent)
    page = admin_browser.get("/ops/users/").content.decode()
    assert 'data-user="alice"' in page and "1 / 7" in page and "staff" in page
    response = admin_browser.post(
        f"/ops/users/{alice.pk}/quota", {"max_sessions": "2", "max_cpu_millicores": "", "max_memory_mb": "4096"}
    )
    assert response.status_code == 302
    quota = UserQuota.objects.get(user=alice)
    assert (quota.max_sessions, quota.max_cpu_millicores, quota.max_memory_mb) == (2, None, 4096)
    assert AuditEvent.objects.filter(action="quota.change", actor=admin_user).exists()
    assert "1 / 2" in admin_browser.get("/ops/users/").content.decode()
    bad = admin_browser.post(f"/ops/users/{alice.pk}/quota", {"max_sessions": "-1", "max_memory_mb": "lots"})
    assert bad.status_code == 200 and UserQuota.objects.get(user=alice).max_sessions == 2
    assert admin_browser.get("/ops/users/999999/quota").status_code == 404


def test_audit_page_shows_recent_actions(admin_browser, alice_browser, alice, demo_template, local_agent):
    session = make_session(alice, demo_template, local_agent)
    alice_browser.post(f"/sessions/{session.pk}/hibernate")
    page = admin_browser.get("/ops/audit/").content.decode()
    assert 'data-audit-action="session.hibernate"' in page and "alice" in page
    filtered = admin_browser.get("/ops/audit/", {"action": "quota."}).content.decode()
    assert 'data-audit-action="session.hibernate"' not in filtered


def test_plugins_page_shows_deliveries(admin_browser):
    plugin = Plugin.objects.create(name="hook", type="webhook", events=["session.created"])
    WebhookDelivery.objects.create(
        plugin=plugin, event="session.created", status="failed", response_code=500, error="boom"
    )
    page = admin_browser.get("/ops/plugins/").content.decode()
    assert 'data-plugin="hook"' in page and "boom" in page and ">500<" in page
    assert "boom" in admin_browser.get("/ops/plugins/", {"plugin": "hook"}).content.decode()
    assert "boom" not in admin_browser.get("/ops/plugins/", {"plugin": "other"}).content.decode()

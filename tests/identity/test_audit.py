"""Audit trail of identity and admin actions; retention pruning."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.utils import timezone

from streamspace.accounts.models import Role
from streamspace.audit.models import AuditEvent
from streamspace.audit.services import prune, record
from tests.identity.peers import forms_in

pytestmark = pytest.mark.django_db


def test_admin_additions_and_bulk_deletions_are_audited(admin_user, client):
    client.force_login(admin_user)
    # submit the add form as rendered (other apps may add inlines with their management forms)
    form = next(f for f in forms_in(client.get("/admin/auth/group/add/").content.decode()) if "name" in f.fields)
    data = {k: v for k, v in form.fields.items() if not k.startswith("_")} | {"name": "ops-team", "_save": "Save"}
    response = client.post("/admin/auth/group/add/", data, HTTP_USER_AGENT="admin-ua")
    assert response.status_code == 302, response.content[-2000:]
    added = AuditEvent.objects.get(action="admin.add")
    assert (added.actor, added.target_type, added.user_agent) == (admin_user, "group", "admin-ua")
    assert added.details["object"] == "ops-team"

    ids = [Group.objects.create(name=f"g{i}").pk for i in range(3)]
    response = client.post("/admin/auth/group/", {"action": "delete_selected", "_selected_action": ids, "post": "yes"})
    assert response.status_code == 302 and not Group.objects.filter(pk__in=ids).exists()
    deleted = AuditEvent.objects.filter(action="admin.delete")
    assert sorted(int(e.target_id) for e in deleted) == sorted(ids)


def test_role_change_through_the_api_is_audited(admin_client, admin_user, alice):
    response = admin_client.patch(f"/api/v1/users/{alice.pk}", {"role": "operator"}, format="json")
    assert response.status_code == 200 and response.json()["role"] == "operator"
    alice.refresh_from_db()
    assert alice.role == Role.OPERATOR and alice.is_staff
    event = AuditEvent.objects.get(action="user.role_changed")
    assert event.actor == admin_user and event.details == {"from": "user", "to": "operator", "via": "api"}
    # unchanged role: no event; self-demotion refused
    admin_client.patch(f"/api/v1/users/{alice.pk}", {"role": "operator"}, format="json")
    assert AuditEvent.objects.filter(action="user.role_changed").count() == 1
    me = admin_client.patch(f"/api/v1/users/{admin_user.pk}", {"role": "user"}, format="json")
    assert me.status_code == 409 and me.json()["code"] == "self_demotion"


def test_user_list_filters(admin_client, alice, bob, operator):
    data = admin_client.get("/api/v1/users?role=operator").json()
    assert [u["username"] for u in data["results"]] == ["olivia"]
    assert admin_client.get("/api/v1/users?q=ali").json()["results"][0]["mfa_enabled"] is False


def test_portal_login_and_logout_are_audited(alice, client):
    response = client.post("/accounts/login/", {"login": "alice", "password": "pw-alice"}, HTTP_USER_AGENT="ua-1")
    assert response.status_code == 302
    login = AuditEvent.objects.get(action="user.login")
    assert login.actor == alice and login.details["method"] == "password" and login.user_agent == "ua-1"
    client.post("/accounts/logout/")
    assert AuditEvent.objects.filter(action="user.logout", actor=alice).exists()
    client.post("/accounts/login/", {"login": "alice", "password": "nope"})
    failed = AuditEvent.objects.get(action="user.login_failed")
    assert failed.actor is None and failed.actor_repr == "alice"
    assert "nope" not in str(failed.details)


def test_audit_api_filters_by_action(admin_client, alice):
    record("user.login", actor=alice)
    record("token.created", actor=alice)
    results = admin_client.get("/api/v1/audit?action=token.created").json()["results"]
    assert [r["action"] for r in results] == ["token.created"]


def test_prune_deletes_only_old_events(settings):
    settings.AUDIT_RETENTION_DAYS = 30
    old = [record("test.old") for _ in range(3)]
    AuditEvent.objects.filter(pk__in=[e.pk for e in old]).update(created_at=timezone.now() - timedelta(days=31))
    keep = record("test.new")
    assert prune(batch_size=2) == 3
    assert list(AuditEvent.objects.values_list("pk", flat=True)) == [keep.pk]
    with pytest.raises(ValueError):
        prune(older_than_days=0)


def test_prune_command(capsys):
    event = record("test.old")
    AuditEvent.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(days=10))
    call_command("prune_audit", "--days", "11")
    assert AuditEvent.objects.filter(pk=event.pk).exists()
    call_command("prune_audit", "--days", "9")
    assert not AuditEvent.objects.filter(pk=event.pk).exists()
    assert "Deleted 1 audit event" in capsys.readouterr().out

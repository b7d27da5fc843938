"""Effective quota resolution and enforcement (single-threaded; the race under concurrent launches
is in test_postgres_concurrency.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from sessions_app import quotas
from sessions_app.models import GroupQuota, Session, SessionState, UserQuota
from streamspace.audit.models import AuditEvent
from tests.support.factories import make_session

pytestmark = pytest.mark.django_db


def group_with(name, **limits):
    group = Group.objects.create(name=name)
    GroupQuota.objects.create(group=group, **limits)
    return group


def test_site_default_when_nothing_set(alice, settings):
    settings.STREAMSPACE_DEFAULT_QUOTA = {"max_sessions": 4, "max_cpu_millicores": 3000, "max_memory_mb": 2048}
    quota = quotas.effective_quota(alice)
    assert (quota.max_sessions, quota.max_cpu_millicores, quota.max_memory_mb) == (4, 3000, 2048)
    assert set(quota.sources.values()) == {"default"}


def test_strictest_group_wins_per_limit(alice, settings):
    settings.STREAMSPACE_DEFAULT_QUOTA = {"max_sessions": 9, "max_cpu_millicores": 9000, "max_memory_mb": 9000}
    alice.groups.add(group_with("students", max_sessions=2, max_cpu_millicores=4000))
    alice.groups.add(group_with("lab", max_sessions=5, max_cpu_millicores=1500))
    alice.groups.add(group_with("empty"))
    quota = quotas.effective_quota(alice)
    assert quota.max_sessions == 2 and quota.sources["max_sessions"] == "group:students"
    assert quota.max_cpu_millicores == 1500 and quota.sources["max_cpu_millicores"] == "group:lab"
    assert quota.max_memory_mb == 9000 and quota.sources["max_memory_mb"] == "default"


def test_user_override_beats_groups_even_when_larger(alice):
    alice.groups.add(group_with("students", max_sessions=1))
    UserQuota.objects.create(user=alice, max_sessions=10)
    quota = quotas.effective_quota(alice)
    assert quota.max_sessions == 10 and quota.sources["max_sessions"] == "user"


def test_other_users_groups_do_not_apply(alice, bob):
    bob.groups.add(group_with("tiny", max_sessions=0))
    assert quotas.effective_quota(alice).sources["max_sessions"] == "default"


def test_usage_counts_states(alice, template):
    for state in SessionState.values:
        make_session(alice, template, state=state, memory_mb=10)
    usage = quotas.usage(alice)
    # Not counted: stopped, failed. Hibernated counts as a session but holds no CPU/memory.
    assert usage.sessions == 7
    assert usage.cpu_millicores == 600 and usage.memory_mb == 60


def test_usage_per_user_is_the_same_rule(alice, bob, template):
    for state in SessionState.values:
        make_session(alice, template, state=state, memory_mb=10)
    make_session(bob, template, state="stopped")
    make_session(bob, template, state="hibernated", memory_mb=10)
    rows = {r["user_id"]: r for r in Session.objects.usage_by_user("user__username")}
    assert rows[alice.pk] == {
        "user_id": alice.pk,
        "user__username": "alice",
        **quotas.usage(alice).as_dict(),
    }
    assert rows[bob.pk] == {
        "user_id": bob.pk,
        "user__username": "bob",
        "sessions": 1,
        "cpu_millicores": 0,
        "memory_mb": 0,
    }
    assert Session.objects.filter(user=bob, state="stopped").usage() == {
        "sessions": 0,
        "cpu_millicores": 0,
        "memory_mb": 0,
    }


@pytest.mark.parametrize(
    "override,resources,limit",
    [
        ({"max_sessions": 1}, {}, "max_sessions"),
        ({"max_cpu_millicores": 1500}, {"cpu_millicores": 1000}, "max_cpu_millicores"),
        ({"max_memory_mb": 1500}, {"memory_mb": 1000}, "max_memory_mb"),
    ],
)
def test_launch_refused_past_each_limit(alice, alice_client, template, docker_agent, override, resources, limit):
    UserQuota.objects.create(user=alice, **override)
    first = alice_client.post("/api/v1/sessions", {"template": "xfce", "resources": resources}, format="json")
    assert first.status_code == 202
    second = alice_client.post("/api/v1/sessions", {"template": "xfce", "resources": resources}, format="json")
    assert second.status_code == 403
    body = second.json()
    assert body["code"] == "quota_exceeded" and body["limit"] == limit and body["detail"]
    assert Session.objects.filter(user=alice).count() == 1
    assert AuditEvent.objects.filter(action="quota.exceeded", actor=alice, details__limit=limit).count() == 1


def test_wake_rechecks_cpu(alice, alice_client, template, docker_agent):
    from sessions_app.state import transition

    UserQuota.objects.create(user=alice, max_cpu_millicores=1000)
    first = alice_client.post("/api/v1/sessions", {"template": "xfce"}, format="json").json()["id"]
    session = Session.objects.get(pk=first)
    for state in ("running", "hibernating", "hibernated"):
        transition(session, state)
    # While it sleeps, its CPU is free for another session...
    assert alice_client.post("/api/v1/sessions", {"template": "xfce"}, format="json").status_code == 202
    # ...so it cannot wake until that one stops.
    response = alice_client.post(f"/api/v1/sessions/{first}/wake")
    assert response.status_code == 403 and response.json()["limit"] == "max_cpu_millicores"
    assert Session.objects.get(pk=first).state == "hibernated"


def test_quota_api_me_and_admin(alice, alice_client, admin_client, template, docker_agent):
    alice_client.post("/api/v1/sessions", {"template": "xfce"}, format="json")
    me = alice_client.get("/api/v1/users/me/quota").json()
    assert me["usage"] == {"sessions": 1, "cpu_millicores": 1000, "memory_mb": 1024}
    assert me["sources"]["max_sessions"] == "default"
    assert alice_client.get(f"/api/v1/users/{alice.pk}/quota").status_code == 403
    response = admin_client.put(f"/api/v1/users/{alice.pk}/quota", {"max_sessions": 7}, format="json")
    assert response.status_code == 200
    assert response.json()["limits"]["max_sessions"] == 7 and response.json()["sources"]["max_sessions"] == "user"
    assert admin_client.get(f"/api/v1/users/{alice.pk}/quota").json()["overrides"]["max_sessions"] == 7
    change = AuditEvent.objects.get(action="quota.change")
    assert change.details["after"]["max_sessions"] == 7 and change.target_id == str(alice.pk)
    # Clearing the override falls back again.
    admin_client.put(f"/api/v1/users/{alice.pk}/quota", {"max_sessions": None}, format="json")
    assert alice_client.get("/api/v1/users/me/quota").json()["sources"]["max_sessions"] == "default"
    assert admin_client.put(f"/api/v1/users/{alice.pk}/quota", {"max_sessions": -1}, format="json").status_code == 400
    assert admin_client.get("/api/v1/users/999999/quota").status_code == 404

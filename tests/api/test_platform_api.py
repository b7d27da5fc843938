"""Auth, catalog, agents, audit, health and admin registrations."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.core.management import call_command

from agents_app.models import Agent, AgentCommand, AgentInstance, AgentQuerySet
from agents_app.tokens import hash_token
from sessions_app.models import ACTIVE_STATES, SessionState, Template
from streamspace.audit.models import AuditEvent
from tests.support.clients import client_for
from tests.support.factories import make_session

pytestmark = pytest.mark.django_db


def test_login_and_refresh(anon_client, alice):
    response = anon_client.post("/api/v1/auth/login", {"username": "alice", "password": "pw-alice"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["user"]["username"] == "alice" and body["user"]["role"] == "user"
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {body['access']}")
    assert anon_client.get("/api/v1/users/me").json()["username"] == "alice"
    refreshed = anon_client.post("/api/v1/auth/refresh", {"refresh": body["refresh"]}, format="json")
    assert refreshed.status_code == 200 and refreshed.json()["access"]
    assert AuditEvent.objects.filter(action="user.login", actor=alice).count() == 1


def test_login_failure_is_401_and_audited(anon_client, alice):
    response = anon_client.post("/api/v1/auth/login", {"username": "alice", "password": "wrong"}, format="json")
    assert response.status_code == 401 and response.json()["code"] == "invalid_credentials"
    unknown = anon_client.post("/api/v1/auth/login", {"username": "nobody", "password": "x"}, format="json")
    assert unknown.json() == response.json()  # does not reveal whether the user exists
    assert AuditEvent.objects.filter(action="user.login_failed").count() == 2


def test_refresh_with_garbage_is_401(anon_client):
    response = anon_client.post("/api/v1/auth/refresh", {"refresh": "nope"}, format="json")
    assert response.status_code == 401


def test_catalog_visibility_and_editing(alice_client, operator_client, template):
    Template.objects.create(slug="hidden", display_name="Hidden", image="x/y:1", enabled=False)
    assert [t["slug"] for t in alice_client.get("/api/v1/templates").json()] == ["xfce"]
    assert {t["slug"] for t in operator_client.get("/api/v1/templates").json()} == {"xfce", "hidden"}
    assert alice_client.get("/api/v1/templates/hidden").status_code == 404
    created = operator_client.post(
        "/api/v1/templates",
        {
            "slug": "gimp",
            "display_name": "GIMP",
            "image": "registry.local/gimp:2",
            "category": "Graphics",
            "tags": ["graphics"],
            "env": {"LANG": "C"},
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["streaming_port"] == 8080
    assert alice_client.get("/api/v1/templates?category=Graphics").json()[0]["slug"] == "gimp"
    patched = operator_client.patch("/api/v1/templates/gimp", {"enabled": False}, format="json")
    assert patched.status_code == 200 and patched.json()["enabled"] is False
    assert operator_client.delete("/api/v1/templates/gimp").status_code == 204
    actions = list(AuditEvent.objects.filter(target_type="template").values_list("action", flat=True))
    assert sorted(actions) == ["template.create", "template.delete", "template.update"]


@pytest.mark.parametrize(
    "body,field",
    [
        ({"slug": "a", "display_name": "A", "platform": "local"}, "command"),
        ({"slug": "b", "display_name": "B"}, "image"),
        ({"slug": "c", "display_name": "C", "image": "UPPER CASE"}, "image"),
        ({"slug": "d", "display_name": "D", "image": "x/y", "env": {"A": 1}}, "env"),
        (
            {"slug": "e", "display_name": "E", "image": "x/y", "volume_mounts": [{"name": "v", "mount_path": "rel"}]},
            "volume_mounts",
        ),
        ({"slug": "f", "display_name": "F", "image": "x/y", "streaming_port": 70000}, "streaming_port"),
        ({"slug": "xfce", "display_name": "dup", "image": "x/y"}, "slug"),
    ],
)
def test_template_validation(operator_client, template, body, field):
    response = operator_client.post("/api/v1/templates", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_template_in_use_cannot_be_deleted(alice_client, operator_client, template, docker_agent):
    alice_client.post("/api/v1/sessions", {"template": "xfce"}, format="json")
    response = operator_client.delete("/api/v1/templates/xfce")
    assert response.status_code == 409 and response.json()["code"] == "template_in_use"


def test_agents_api(admin_client, operator_client):
    response = admin_client.post("/api/v1/agents", {"agent_id": "docker-a", "platform": "docker"}, format="json")
    assert response.status_code == 201
    token = response.json()["token"]
    agent = Agent.objects.get(agent_id="docker-a")
    assert agent.token_hash == hash_token(token) and token not in agent.token_hash
    assert (
        admin_client.post("/api/v1/agents", {"agent_id": "docker-a", "platform": "docker"}, format="json").json()[
            "code"
        ]
        == "agent_exists"
    )
    listed = operator_client.get("/api/v1/agents").json()
    assert listed[0]["agent_id"] == "docker-a" and listed[0]["instances"] == [] and "token" not in listed[0]
    assert operator_client.get("/api/v1/agents/docker-a").json()["proxy_mode"] == "auto"
    assert operator_client.get("/api/v1/agents/nope").status_code == 404


def test_agents_api_counts_active_sessions_and_unacknowledged_commands(
    operator_client, alice, template, docker_agent, django_assert_num_queries
):
    assert AgentQuerySet.session_states == tuple(ACTIVE_STATES)  # set by sessions_app's ready()
    for state in SessionState.values:  # one session per state: 7 active, stopped and failed not
        make_session(alice, template, docker_agent, state=state)
    for state in ("pending", "sent", "sent", "acked", "succeeded", "failed", "expired"):
        AgentCommand.objects.create(agent=docker_agent, action="start_session", state=state)
    for instance_id, leader in (("b", False), ("a", False), ("c", True)):
        AgentInstance.objects.create(agent=docker_agent, instance_id=instance_id, is_leader=leader)
    Agent.objects.create(agent_id="idle", platform="docker", token_hash="x")

    with django_assert_num_queries(2):
        agents = {a.agent_id: a for a in Agent.objects.with_replicas_and_counts()}
        assert [i.instance_id for i in agents["docker-1"].instances.all()] == ["c", "a", "b"]
    assert (agents["docker-1"].active_session_count, agents["docker-1"].pending_command_count) == (7, 3)
    assert (agents["idle"].active_session_count, agents["idle"].pending_command_count) == (0, 0)
    body = operator_client.get(f"/api/v1/agents/{docker_agent.agent_id}").json()
    assert (body["sessions"], body["pending_commands"]) == (7, 3)
    assert [i["instance_id"] for i in body["instances"]] == ["c", "a", "b"]


def test_create_agent_command_prints_token_once(capsys):
    call_command("create_agent", "k8s-prod", "--platform", "kubernetes")
    token = capsys.readouterr().out.strip()
    assert token.startswith("ssa_")
    assert Agent.objects.get(agent_id="k8s-prod").token_hash == hash_token(token)


def test_audit_api_filters_and_pages(admin_client, alice, admin_user):
    from streamspace.audit.services import record

    for i in range(5):
        record("session.create", actor=alice, target_type="session", target_id=str(i))
    record("template.create", actor=admin_user, target_type="template", target_id="t")
    body = admin_client.get("/api/v1/audit?action=session.create&page_size=2").json()
    assert body["count"] == 5 and len(body["results"]) == 2
    assert body["results"][0]["actor_repr"] == "alice"
    assert admin_client.get("/api/v1/audit?actor=admin").json()["count"] == 1
    assert admin_client.get("/api/v1/audit?target_type=session&target_id=3").json()["count"] == 1
    assert admin_client.get("/api/v1/audit?since=2999-01-01T00:00:00Z").json()["count"] == 0
    bad = admin_client.get("/api/v1/audit?since=yesterday")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"


def test_health_ready_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and b"django_http_requests" in metrics.content


def test_readyz_reports_unreachable_redis(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["problems"] == ["redis: ConnectionError"]


def test_schema_and_docs_served(client):
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in (
        "/api/v1/sessions",
        "/api/v1/sessions/{session_id}/viewer-url",
        "/api/v1/auth/login",
        "/api/v1/users/me/quota",
        "/api/v1/audit",
        "/api/v1/agents",
    ):
        assert path in paths
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content


def test_every_model_has_an_admin(admin_user, client):
    from django.apps import apps

    ours = [
        m
        for m in apps.get_models()
        if m._meta.app_label in ("accounts", "audit", "sessions_app", "agents_app", "plugins_app")
    ]
    assert ours and all(admin.site.is_registered(m) for m in ours)
    client.force_login(admin_user)
    for model in ours:
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        assert client.get(url).status_code == 200, url


def test_admin_role_derives_django_flags(alice):
    assert not alice.is_staff and not alice.is_superuser
    alice.role = "operator"
    alice.save()
    assert alice.is_staff and not alice.is_superuser
    alice.role = "admin"
    alice.save(update_fields=["role"])
    alice.refresh_from_db()
    assert alice.is_superuser and alice.is_staff


def test_seed_demo_is_idempotent_and_prints_password(capsys):
    call_command("seed_demo")
    first = capsys.readouterr().out
    assert "admin / " in first
    call_command("seed_demo")
    assert "exists already" in capsys.readouterr().out
    assert Template.objects.filter(slug="demo-canvas", platform="local").exists()
    assert Template.objects.count() >= 5
    client = client_for(None)
    password = first.split("admin / ", 1)[1].split()[0]
    assert (
        client.post("/api/v1/auth/login", {"username": "admin", "password": password}, format="json").status_code == 200
    )

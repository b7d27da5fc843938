"""Sessions API: launch, read, lifecycle actions, visibility between users."""

from __future__ import annotations

import pytest

from agents_app.models import AgentCommand, CommandState
from sessions_app.models import Session, SessionState, Template
from sessions_app.state import transition
from streamspace.audit.models import AuditEvent
from tests.support.clients import launch
from tests.support.factories import make_session, share

pytestmark = pytest.mark.django_db


def test_launch_creates_pending_session_command_and_audit(alice_client, alice, template, docker_agent):
    response = launch(alice_client, resources={"cpu_millicores": 500, "memory_mb": 512}, persistent_home=False)
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["state"] == "pending"
    assert body["user"] == "alice" and body["template"] == "xfce" and body["agent_id"] == "docker-1"
    assert body["resources"] == {"cpu_millicores": 500, "memory_mb": 512}
    assert body["persistent_home"] is False
    assert body["viewer_path"] == f"/api/v1/http/{body['id']}/"
    for field in (
        "platform",
        "streaming_ready",
        "streaming_port",
        "last_activity",
        "created_at",
        "updated_at",
        "status_message",
        "idle_timeout_s",
        "name",
    ):
        assert field in body
    command = AgentCommand.objects.get(session_id=body["id"])
    assert command.action == "start_session" and command.state == CommandState.PENDING
    assert command.spec["image"] == "registry.local/xfce:1"
    assert command.spec["user"] == "alice" and command.spec["cpu_millicores"] == 500
    assert AuditEvent.objects.filter(action="session.create", target_id=body["id"], actor=alice).exists()


def test_launch_uses_template_defaults(alice_client, template, docker_agent):
    body = launch(alice_client).json()
    assert body["resources"] == {"cpu_millicores": 1000, "memory_mb": 1024}
    assert body["persistent_home"] is True


def test_idle_timeout_capped_by_policy(alice_client, template, docker_agent, settings):
    settings.STREAMSPACE_DEFAULT_IDLE_TIMEOUT_S = 600
    assert launch(alice_client, idle_timeout_s=300).json()["idle_timeout_s"] == 300
    assert launch(alice_client, idle_timeout_s=7200).json()["idle_timeout_s"] == 600


def test_unknown_and_disabled_template(alice_client, template, docker_agent):
    response = launch(alice_client, "nope")
    assert response.status_code == 400 and response.json()["code"] == "unknown_template"
    Template.objects.filter(pk=template.pk).update(enabled=False)
    assert launch(alice_client).json()["code"] == "unknown_template"


def test_no_agent_for_platform_is_503(alice_client, template):
    response = launch(alice_client)
    assert response.status_code == 503
    assert response.json()["code"] == "no_agent"
    assert not Session.objects.exists()


def test_agent_of_other_platform_does_not_serve(alice_client, template, db):
    from agents_app.models import Agent

    Agent.objects.create(agent_id="local-1", platform="local", token_hash="x" * 64)
    assert launch(alice_client).status_code == 503


def test_list_shows_only_own_sessions(alice_client, bob_client, template, docker_agent):
    launch(alice_client)
    launch(alice_client)
    launch(bob_client)
    body = alice_client.get("/api/v1/sessions").json()
    assert body["count"] == 2
    assert {s["user"] for s in body["results"]} == {"alice"}


def test_operator_lists_all_with_all_param(alice_client, bob_client, operator_client, template, docker_agent):
    launch(alice_client)
    launch(bob_client)
    assert operator_client.get("/api/v1/sessions").json()["count"] == 0
    assert operator_client.get("/api/v1/sessions?all=1").json()["count"] == 2
    # A plain user asking for all gets their own.
    assert alice_client.get("/api/v1/sessions?all=1").json()["count"] == 1


def test_list_filters_by_state_and_rejects_unknown_state(alice_client, template, docker_agent):
    launch(alice_client)
    assert alice_client.get("/api/v1/sessions?state=pending").json()["count"] == 1
    assert alice_client.get("/api/v1/sessions?state=running").json()["count"] == 0
    response = alice_client.get("/api/v1/sessions?state=bogus")
    assert response.status_code == 400 and response.json()["code"] == "invalid"


@pytest.mark.parametrize(
    "method,suffix",
    [
        ("get", ""),
        ("delete", ""),
        ("post", "/hibernate"),
        ("post", "/wake"),
        ("post", "/heartbeat"),
        ("get", "/viewer-url"),
    ],
)
def test_bob_cannot_touch_alices_session(
    alice_client, bob_client, admin_client, template, docker_agent, method, suffix
):
    session_id = launch(alice_client).json()["id"]
    Session.objects.filter(pk=session_id).update(state=SessionState.RUNNING)
    response = getattr(bob_client, method)(f"/api/v1/sessions/{session_id}{suffix}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert Session.objects.get(pk=session_id).state == SessionState.RUNNING
    assert getattr(admin_client, method)(f"/api/v1/sessions/{session_id}{suffix}").status_code in (200, 202, 204)


def test_shared_user_can_view_but_not_manage(alice_client, bob_client, bob, template, docker_agent):
    session_id = launch(alice_client).json()["id"]
    session = Session.objects.get(pk=session_id)
    transition(session, SessionState.RUNNING)
    share(session, bob)
    assert bob_client.get(f"/api/v1/sessions/{session_id}").status_code == 200
    assert bob_client.get(f"/api/v1/sessions/{session_id}/viewer-url").status_code == 200
    assert bob_client.delete(f"/api/v1/sessions/{session_id}").status_code == 404
    assert bob_client.post(f"/api/v1/sessions/{session_id}/hibernate").status_code == 404


def test_hibernate_wake_stop_lifecycle(alice_client, template, docker_agent):
    session_id = launch(alice_client).json()["id"]
    session = Session.objects.get(pk=session_id)
    # Hibernating a pending session is illegal.
    response = alice_client.post(f"/api/v1/sessions/{session_id}/hibernate")
    assert response.status_code == 409
    assert response.json()["code"] == "illegal_transition" and response.json()["state"] == "pending"

    transition(session, SessionState.RUNNING, streaming_ready=True)
    response = alice_client.post(f"/api/v1/sessions/{session_id}/hibernate")
    assert response.status_code == 202 and response.json()["state"] == "hibernating"
    assert response.json()["streaming_ready"] is False
    # Repeating it is a no-op, not a second command.
    assert alice_client.post(f"/api/v1/sessions/{session_id}/hibernate").status_code == 202
    assert AgentCommand.objects.filter(session_id=session_id, action="hibernate_session").count() == 1

    # Waking is only possible once hibernated.
    assert alice_client.post(f"/api/v1/sessions/{session_id}/wake").status_code == 409
    transition(Session.objects.get(pk=session_id), SessionState.HIBERNATED)
    response = alice_client.post(f"/api/v1/sessions/{session_id}/wake")
    assert response.status_code == 202 and response.json()["state"] == "waking"
    assert AgentCommand.objects.get(session_id=session_id, action="wake_session").spec["image"]

    response = alice_client.delete(f"/api/v1/sessions/{session_id}")
    assert response.status_code == 202 and response.json()["state"] == "stopping"
    assert alice_client.delete(f"/api/v1/sessions/{session_id}").status_code == 202
    assert AgentCommand.objects.filter(session_id=session_id, action="stop_session").count() == 1
    actions = set(AuditEvent.objects.filter(target_id=session_id).values_list("action", flat=True))
    assert actions == {"session.create", "session.hibernate", "session.wake", "session.stop"}


def test_stopped_session_cannot_be_woken_or_viewed(alice_client, template, docker_agent):
    session_id = launch(alice_client).json()["id"]
    session = Session.objects.get(pk=session_id)
    transition(session, SessionState.STOPPING)
    transition(session, SessionState.STOPPED)
    assert alice_client.post(f"/api/v1/sessions/{session_id}/wake").json()["code"] == "illegal_transition"
    assert alice_client.post(f"/api/v1/sessions/{session_id}/hibernate").status_code == 409
    response = alice_client.get(f"/api/v1/sessions/{session_id}/viewer-url")
    assert response.status_code == 409 and response.json()["code"] == "session_not_viewable"


def test_heartbeat_updates_last_activity_throttled(alice_client, template, docker_agent, settings):
    from datetime import timedelta

    from django.utils import timezone

    session_id = launch(alice_client).json()["id"]
    old = timezone.now() - timedelta(minutes=10)
    Session.objects.filter(pk=session_id).update(last_activity=old)
    assert alice_client.post(f"/api/v1/sessions/{session_id}/heartbeat").status_code == 204
    first = Session.objects.get(pk=session_id).last_activity
    assert first > old
    alice_client.post(f"/api/v1/sessions/{session_id}/heartbeat")
    assert Session.objects.get(pk=session_id).last_activity == first  # throttled: within 30 s


def test_viewer_url_is_bound_to_session_and_user(alice_client, alice, template, docker_agent):
    from sessions_app.viewer import read_viewer_token

    session_id = launch(alice_client).json()["id"]
    body = alice_client.get(f"/api/v1/sessions/{session_id}/viewer-url").json()
    # On the session's own origin (same scheme and port as the portal), never the portal's.
    assert body["url"].startswith(f"http://{session_id}.localhost/?token=")
    data = read_viewer_token(body["url"].split("token=", 1)[1])
    # o: the portal that may frame it; e: the credentials epoch (accounts.credentials)
    assert data == {"s": session_id, "u": alice.pk, "e": alice.credentials_epoch, "o": "http://testserver"}
    on_port = alice_client.get(f"/api/v1/sessions/{session_id}/viewer-url", HTTP_HOST="localhost:8000").json()
    assert on_port["url"].startswith(f"http://{session_id}.localhost:8000/?token=")
    secure = alice_client.get(f"/api/v1/sessions/{session_id}/viewer-url", secure=True).json()
    assert secure["url"].startswith(f"https://{session_id}.localhost/?token=")
    assert read_viewer_token(body["url"].split("token=", 1)[1] + "x") is None
    assert read_viewer_token(body["url"].split("token=", 1)[1], max_age=-1) is None


def _both_forms(session_id) -> tuple[dict, dict]:
    """The session as the API sends it (rows) and as ``SessionSerializer`` writes the instance."""
    import json

    from rest_framework.renderers import JSONRenderer

    from sessions_app.api.representation import represent_one
    from sessions_app.api.serializers import SessionSerializer

    session = Session.objects.select_related("user", "template", "agent").get(pk=session_id)
    declared = json.loads(JSONRenderer().render(SessionSerializer(session).data))
    assert list(declared) == list(SessionSerializer().fields)
    return json.loads(JSONRenderer().render(represent_one(session_id))), declared


def test_session_representation_matches_declared_serializer(alice_client, template, docker_agent):
    """The values()-based representation and the OpenAPI serializer agree on every field, in order."""
    session_id = launch(alice_client, name="mine").json()["id"]
    session = Session.objects.get(pk=session_id)
    transition(session, SessionState.RUNNING, streaming_ready=True, streaming_port=8080, message="up")
    step = {"step": "ready", "label": "Ready", "state": "done", "at_s": 1.5, "duration_s": 0.0}
    Session.objects.filter(pk=session_id).update(exit_code=3, launch_progress=[step])
    sent, declared = _both_forms(session_id)
    assert declared["progress"] == [step]
    assert [key for key, value in declared.items() if value in (None, "")] == []  # every field compared with a value
    assert list(sent.items()) == list(declared.items())

    Session.objects.filter(pk=session_id).update(agent=None, streaming_port=None, status_message="")
    sent, declared = _both_forms(session_id)
    assert declared["agent_id"] is None and declared["streaming_port"] is None
    assert list(sent.items()) == list(declared.items())


def test_a_serializer_field_is_a_representation_field():
    """A plain field added to the serializer is read from its column; a computed one needs a row form."""
    import uuid

    from django.core.exceptions import ImproperlyConfigured
    from rest_framework import serializers

    from sessions_app.api.representation import COMPUTED, Computed, build_plan
    from sessions_app.api.serializers import SessionSerializer

    class WithEndpoint(SessionSerializer):
        class Meta(SessionSerializer.Meta):
            fields = [*SessionSerializer.Meta.fields, "endpoint"]
            read_only_fields = fields

    plan = build_plan(WithEndpoint, COMPUTED)
    assert "endpoint" in plan.columns and [name for name, _ in plan.readers][-1] == "endpoint"
    row = dict.fromkeys(plan.columns, None) | {"id": uuid.uuid4(), "endpoint": "10.0.0.1:8080"}
    assert dict(plan.readers)["endpoint"](row) == "10.0.0.1:8080"

    class WithComputed(SessionSerializer):
        uptime = serializers.SerializerMethodField()

        class Meta(SessionSerializer.Meta):
            fields = [*SessionSerializer.Meta.fields, "uptime"]
            read_only_fields = fields

        def get_uptime(self, obj) -> int:
            return 0

    with pytest.raises(ImproperlyConfigured, match="uptime"):
        build_plan(WithComputed, COMPUTED)
    plan = build_plan(WithComputed, COMPUTED | {"uptime": Computed(("state_changed_at",), lambda row: 0)})
    assert "state_changed_at" in plan.columns
    with pytest.raises(ImproperlyConfigured, match="uptime"):
        build_plan(SessionSerializer, COMPUTED | {"uptime": Computed((), lambda row: 0)})


def test_who_may_see_and_who_may_change_a_session(alice, bob, operator, template, docker_agent):
    """``Session.objects.visible_to`` / ``managed_by``: the rule the API and the portal apply."""
    own = make_session(alice, template, docker_agent)
    shared = make_session(bob, template, docker_agent)
    share(shared, alice, bob)  # shared with its owner too: still one row
    other = make_session(bob, template, docker_agent)
    every = {own.pk, shared.pk, other.pk}

    def ids(queryset) -> list:
        return sorted(queryset.values_list("pk", flat=True), key=str)

    assert ids(Session.objects.visible_to(alice)) == sorted([own.pk, shared.pk], key=str)
    assert ids(Session.objects.managed_by(alice)) == [own.pk]
    assert set(ids(Session.objects.visible_to(bob))) == {shared.pk, other.pk}
    assert set(ids(Session.objects.visible_to(operator))) == set(ids(Session.objects.managed_by(operator))) == every

"""Each §8 event is emitted where it happens, and the example extension observes it.

Session events come from the state machine, ``quota.exceeded`` from a refused launch,
``user.*`` from the accounts app, ``agent.*`` from the hub (a scripted agent over the real
consumer) and the stale-instance sweep.
"""

from __future__ import annotations

import uuid

import pytest
import streamspace_example_plugin as example
from channels.db import database_sync_to_async

from agents_app.models import Agent
from agents_app.tokens import hash_token
from plugins_app.services import install_plugin
from sessions_app import services, share_links, sharing
from sessions_app.models import UserQuota
from sessions_app.state import transition
from streamspace.events import EVENTS
from tests.support.agent_client import AgentClient
from tests.support.factories import make_session, make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def observed(admin_user):
    install_plugin(name="example", type="extension", actor=admin_user)
    example.RECEIVED.clear()

    def names() -> list[str]:
        return [envelope["event"] for envelope in example.RECEIVED]

    return names


def test_session_lifecycle_events(alice, template, docker_agent, observed):
    session = services.launch_session(alice, template)
    transition(session, "running")
    session = services.hibernate_session(session, reason="idle")
    transition(session, "hibernated")
    session = services.wake_session(session)
    transition(session, "running")
    session = services.stop_session(session)
    transition(session, "stopped")
    other = services.launch_session(alice, template)
    services.fail_session(other, "the image could not be pulled")
    assert observed() == [
        "session.created",
        "session.started",
        "session.hibernated",
        "session.woken",
        "session.stopped",
        "session.created",
        "session.failed",
    ]
    failed = example.RECEIVED[-1]
    assert failed["data"]["session"]["id"] == str(other.pk)
    assert failed["data"]["session"]["status_message"] == "the image could not be pulled"


def test_quota_exceeded_event(alice, template, docker_agent, observed):
    UserQuota.objects.create(user=alice, max_sessions=0)
    with pytest.raises(services.QuotaExceeded):
        services.launch_session(alice, template)
    assert observed() == ["quota.exceeded"]
    assert example.RECEIVED[0]["actor"] == "alice" and example.RECEIVED[0]["data"]["limit"] == "max_sessions"


def test_user_events(observed, client):
    user = make_user("dora")
    assert observed() == ["user.created"]
    response = client.post(
        "/api/v1/auth/login", {"username": "dora", "password": "pw-dora"}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    assert observed() == ["user.created", "user.login"]
    assert example.RECEIVED[-1]["data"]["username"] == user.username


@pytest.mark.asyncio
async def test_agent_events_from_the_hub(observed):
    name = f"ev-{uuid.uuid4().hex[:8]}"
    agent = await database_sync_to_async(Agent.objects.create)(
        agent_id=name, platform="docker", token_hash=hash_token(f"token-{name}")
    )
    leader = AgentClient(agent, f"token-{name}", "i-1")
    await leader.register(is_leader=True)
    await leader.send("leader", is_leader=False)
    assert await leader.nothing(0.5)
    await leader.close()
    seen = observed()
    assert seen[:2] == ["agent.connected", "agent.leader_changed"], seen
    assert "agent.disconnected" in seen[2:], seen
    connected = example.RECEIVED[0]["data"]
    assert connected["agent_id"] == name and connected["instance_id"] == "i-1" and connected["is_leader"] is True


def test_every_event_has_a_source_test():
    covered = {
        "session.created",
        "session.started",
        "session.stopped",
        "session.hibernated",
        "session.woken",
        "session.failed",
        "user.login",
        "user.created",
        "agent.connected",
        "agent.disconnected",
        "agent.leader_changed",
        "quota.exceeded",
        "share.granted",
        "share.used",
        "share.revoked",
    }
    assert covered == set(EVENTS)


def test_share_events(alice, template, docker_agent, observed):
    session = make_session(alice, template, docker_agent)
    bob = make_user("bob")
    example.RECEIVED.clear()
    sharing.grant(session, user=bob, role="viewer", actor=alice)
    link, key = sharing.create_link(session, role="collaborator", expires_in_s=600, actor=alice)
    found = share_links.find_link(key, session.pk)
    assert found is not None and found.pk == link.pk
    share_links.record_use(link.pk, session.pk, client_ip="10.0.0.9")
    sharing.revoke(link, actor=alice)
    events = [(e["event"], e["data"].get("kind"), e["data"].get("role")) for e in example.RECEIVED]
    assert events == [
        ("share.granted", "user", "viewer"),
        ("share.granted", "link", "collaborator"),
        ("share.used", "link", "collaborator"),
        ("share.revoked", "link", "collaborator"),
    ]
    assert example.RECEIVED[0]["data"]["recipient"] == "bob" and example.RECEIVED[0]["actor"] == "alice"
    assert all(e["data"]["session_id"] == str(session.pk) for e in example.RECEIVED)

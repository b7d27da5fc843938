"""Endpoints an agent reports are checked against what that agent may report.

The attack: with an agent's token (read from a session's environment), register as that
agent and point a session at a listener of one's own, or at the cloud metadata service.
"""

from __future__ import annotations

import ipaddress
import uuid

import pytest
from channels.db import database_sync_to_async

from agents_app import endpoints
from agents_app.models import Agent
from agents_app.tokens import hash_token
from sessions_app.models import Session, SessionState
from streamspace.audit.models import AuditEvent
from tests.hub.conftest import AgentClient
from tests.support.factories import make_session

SID = "0b9e5a36-5d1c-4a53-9d59-3c7c2b8a9e11"


@pytest.mark.parametrize(
    ("platform", "endpoint", "allowed"),
    [
        ("local", "127.0.0.1:8123", True),
        ("local", "localhost:8123", True),
        ("local", "[::1]:8123", True),
        ("local", "10.0.0.5:8080", False),  # a local agent's sessions are on this host's loopback
        ("docker", "127.0.0.1:32768", False),  # loopback is the control plane's own host
        ("docker", "[::1]:8080", False),
        ("docker", "10.0.0.5:8080", True),
        ("docker", "172.18.0.3:8080", True),
        ("docker", "[fd12:3456::3]:8080", True),
        ("docker", f"streamspace-{SID}:8080", True),  # the session's own container on the network
        ("docker", "streamspace-0b9e5a36-0000-4000-8000-000000000000:8080", False),  # another session's
        ("docker", "evil.example.com:80", False),
        ("docker", "203.0.113.9:8080", False),  # public: only if the operator adds its network
        ("kubernetes", f"ss-{SID}.sessions.svc.cluster.local:8080", True),
        ("kubernetes", f"ss-{SID}:8080", True),
        ("kubernetes", "100.64.3.4:8080", True),
        ("kubernetes", "kubernetes.default.svc:443", False),
        # never, on any platform
        ("local", "169.254.169.254:80", False),
        ("docker", "169.254.169.254:80", False),
        ("kubernetes", "[fd00:ec2::254]:80", False),  # AWS IPv6 metadata (inside fc00::/7)
        ("docker", "169.254.10.1:80", False),
        ("docker", "[fe80::1]:80", False),
        ("docker", "[2002:a9fe:a9fe::]:80", False),  # 6to4 of the metadata address
        ("docker", "[::ffff:10.0.0.5]:80", False),  # IPv4-mapped: not the form agents report
        ("docker", "0.0.0.0:80", False),
        ("docker", "224.0.0.1:80", False),
        # malformed
        ("docker", "10.0.0.5", False),
        ("docker", "10.0.0.5:0", False),
        ("docker", "10.0.0.5:70000", False),
        ("docker", "user@10.0.0.5:80", False),
        ("docker", "10.0.0.5:80/path", False),
        ("docker", " 10.0.0.5:80", False),
        ("docker", "", False),
    ],
)
def test_rule(platform, endpoint, allowed):
    reason = endpoints.refusal(endpoint, platform=platform, session_id=SID)
    assert (reason is None) is allowed, reason


def test_operator_networks_extend_a_platform_but_never_to_metadata():
    extra = endpoints.parse_networks(["docker=203.0.113.0/24", "docker=127.0.0.1/32", "docker=169.254.0.0/16"])
    assert endpoints.refusal("203.0.113.9:8080", platform="docker", session_id=SID, extra_networks=extra) is None
    assert endpoints.refusal("127.0.0.1:32768", platform="docker", session_id=SID, extra_networks=extra) is None
    assert endpoints.refusal("169.254.169.254:80", platform="docker", session_id=SID, extra_networks=extra)
    assert endpoints.refusal("169.254.1.1:80", platform="docker", session_id=SID, extra_networks=extra)
    assert endpoints.refusal("203.0.113.9:8080", platform="kubernetes", session_id=SID, extra_networks=extra)
    assert extra["docker"][0] == ipaddress.ip_network("203.0.113.0/24")
    for bad in ("203.0.113.0/24", "dockr=10.0.0.0/8", "docker=not-a-network"):
        with pytest.raises(ValueError):
            endpoints.parse_networks([bad])


# --- the attack, over the hub ------------------------------------------------------------


def _agent(platform: str) -> tuple[Agent, str]:
    name = f"ep-{uuid.uuid4().hex[:8]}"
    token = f"token-{name}"
    return Agent.objects.create(agent_id=name, platform=platform, token_hash=hash_token(token)), token


@pytest.fixture
def agents(db):
    return {"docker": _agent("docker"), "other": _agent("docker"), "local": _agent("local")}


@pytest.fixture
def sessions(agents, alice, template):
    honest = "10.0.0.7:8080"
    return {
        key: make_session(alice, template, agents[key][0], state=SessionState.STARTING, endpoint=honest)
        for key in ("docker", "other", "local")
    }


def stored(session) -> Session:
    return Session.objects.get(pk=session.pk)


def refusals(session) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="agent.endpoint_refused", target_id=str(session.pk)))


@pytest.mark.django_db(transaction=True)
async def test_a_token_cannot_point_another_agents_session_anywhere(agents, sessions):
    agent, token = agents["docker"]
    attacker = AgentClient(agent, token, "attacker")
    await attacker.register()
    victim = sessions["other"]
    await attacker.send(
        "session_status", session_id=str(victim.pk), state="running", streaming_ready=True, endpoint="10.6.6.6:4444"
    )
    assert (await attacker.recv_type("error"))["code"] == "unknown_session"
    row = await database_sync_to_async(stored)(victim)
    assert row.endpoint == "10.0.0.7:8080" and row.state == SessionState.STARTING
    await attacker.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("endpoint", ["169.254.169.254:80", "127.0.0.1:4444", "[2002:a9fe:a9fe::]:80", "cp:8000"])
async def test_a_refused_endpoint_is_not_stored_and_the_agent_is_told(agents, sessions, endpoint):
    agent, token = agents["docker"]
    client = AgentClient(agent, token, "i-1")
    await client.register()
    session = sessions["docker"]
    await client.send(
        "session_status",
        session_id=str(session.pk),
        state="running",
        streaming_ready=True,
        streaming_port=8080,
        endpoint=endpoint,
    )
    error = await client.recv_type("error")
    assert error["code"] == "endpoint_refused" and endpoint in error["message"]
    row = await database_sync_to_async(stored)(session)
    assert row.state == SessionState.RUNNING and row.streaming_ready  # the status itself applied
    assert row.endpoint == ""  # neither the refused endpoint nor a stale one
    audit = await database_sync_to_async(refusals)(session)
    assert len(audit) == 1 and audit[0].details["endpoint"] == endpoint
    assert audit[0].actor_repr == f"agent:{agent.agent_id}"
    await client.close()


@pytest.mark.django_db(transaction=True)
async def test_allowed_endpoints_are_stored(agents, sessions):
    for key, endpoint in (("docker", "172.18.0.4:8080"), ("local", "127.0.0.1:8123")):
        agent, token = agents[key]
        client = AgentClient(agent, token, "i-1")
        await client.register()
        session = sessions[key]
        await client.send("session_status", session_id=str(session.pk), state="running", endpoint=endpoint)
        await client.send("session_status", session_id="barrier", state="running")
        assert (await client.recv_type("error"))["code"] == "unknown_session"  # not endpoint_refused
        assert (await database_sync_to_async(stored)(session)).endpoint == endpoint
        await client.close()


@pytest.mark.django_db(transaction=True)
async def test_the_register_inventory_is_checked_too(agents, sessions):
    agent, token = agents["docker"]
    session = sessions["docker"]
    await database_sync_to_async(Session.objects.filter(pk=session.pk).update)(state=SessionState.RUNNING)
    item = {"session_id": str(session.pk), "state": "running", "streaming_ready": True, "streaming_port": 80}
    client = AgentClient(agent, token, "i-1")
    await client.register(sessions=[{**item, "endpoint": "169.254.169.254:80"}])
    assert await client.nothing()  # no error frame: it would close a register
    assert (await database_sync_to_async(stored)(session)).endpoint == ""
    assert len(await database_sync_to_async(refusals)(session)) == 1
    await client.close()

"""The agent hub over WebsocketCommunicator: every message type, auth, malformed frames."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from agents_app.hub import presence
from agents_app.models import AgentCommand, AgentInstance, CommandState
from sessions_app.models import Session, SessionState
from tests.hub.conftest import launch
from tests.support.agent_client import AgentClient, frame
from tests.support.factories import make_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def get(model, **filters):
    return database_sync_to_async(lambda: model.objects.get(**filters))()


async def test_bad_token_is_refused(hub_agent):
    agent, _ = hub_agent
    client = AgentClient(agent, "wrong-token", "i-1")
    assert not await client.connect()


async def test_missing_token_is_refused(hub_agent):
    from channels.testing import WebsocketCommunicator

    from streamspace.asgi import application

    comm = WebsocketCommunicator(application, "/api/v1/agents/connect")
    connected, _ = await comm.connect(timeout=5)
    assert not connected


@pytest.mark.parametrize("template,accepted", [("bearer  {}", True), ("Basic {}", False), ("Bearer {} x", False)])
async def test_the_token_header_is_read_by_the_shared_parser(hub_agent, template, accepted):
    from channels.testing import WebsocketCommunicator

    from streamspace.asgi import application

    _, token = hub_agent
    headers = [(b"authorization", template.format(token).encode())]
    comm = WebsocketCommunicator(application, "/api/v1/agents/connect", headers=headers)
    connected, _ = await comm.connect(timeout=5)
    await comm.disconnect()
    assert connected is accepted


async def test_no_origin_needed_for_agents(make_client):
    # Agents are not browsers: no Origin header, still accepted (docs/architecture.md §14).
    assert (await make_client().register())["heartbeat_interval_s"] == settings.AGENT_HEARTBEAT_INTERVAL_S


async def test_register_creates_instance_and_registry_entries(make_client, hub_agent):
    agent, _ = hub_agent
    client = make_client("inst-a")
    registered = await client.register()
    assert registered["instance_id"] == "inst-a"
    instance = await get(AgentInstance, agent=agent, instance_id="inst-a")
    assert instance.connected and instance.is_leader and instance.pod == settings.POD_NAME
    assert instance.hostname == "test-host" and instance.capacity["sessions"] == 10
    live = await database_sync_to_async(presence.connections)(agent.agent_id)
    assert live["inst-a"]["pod"] == settings.POD_NAME and live["inst-a"]["is_leader"] is True
    assert live["inst-a"]["channel"]
    await client.close()
    assert await database_sync_to_async(presence.connections)(agent.agent_id) == {}
    instance = await get(AgentInstance, pk=instance.pk)
    assert not instance.connected and not instance.is_leader and instance.disconnected_at


async def test_first_frame_must_be_register(make_client):
    client = make_client()
    assert await client.connect()
    await client.send("heartbeat", is_leader=True)
    error = await client.recv_type("error")
    assert error["code"] == "not_registered"
    assert (await client.comm.receive_output(timeout=2))["type"] == "websocket.close"


async def test_register_for_another_agent_is_refused(make_client):
    client = make_client()
    assert await client.connect()
    await client.send(
        "register",
        agent_id="someone-else",
        instance_id="x",
        platform="docker",
        version="1",
        hostname="h",
        is_leader=True,
    )
    assert (await client.recv_type("error"))["code"] == "agent_mismatch"
    close = await client.comm.receive_output(timeout=2)
    assert close == {"type": "websocket.close", "code": 4403}


@pytest.mark.parametrize(
    "raw,code",
    [
        ("{not json", "bad_frame"),
        ("[1, 2]", "bad_frame"),
        (json.dumps({"payload": {}}), "bad_frame"),
        (frame("launch_missiles"), "unknown_type"),
        (frame("ack"), "invalid_payload"),
        (frame("ack", command_id=42), "invalid_payload"),
        (frame("heartbeat", is_leader="yes"), "invalid_payload"),
        (frame("session_status", session_id="x", state="dancing"), "invalid_payload"),
        (frame("result", command_id="c", ok="maybe"), "invalid_payload"),
        (frame("leader"), "invalid_payload"),
    ],
)
async def test_malformed_frames_get_error_and_connection_survives(make_client, raw, code):
    client = make_client()
    await client.register()
    await client.send_raw(raw)
    assert (await client.recv_type("error"))["code"] == code
    # Still connected and served.
    await client.send("session_status", session_id="00000000-0000-0000-0000-000000000000", state="running")
    assert (await client.recv_type("error"))["code"] == "unknown_session"
    await client.close()


async def test_oversized_frame_closes_with_1009(make_client):
    client = make_client()
    await client.register()
    await client.send_raw("x" * (2 * 1024 * 1024))
    assert await client.comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 1009}


async def test_bad_frame_does_not_affect_another_connection(make_client, hub_agent, db):
    from agents_app.models import Agent
    from agents_app.tokens import hash_token

    other = await database_sync_to_async(Agent.objects.create)(
        agent_id=hub_agent[0].agent_id + "-b", platform="local", token_hash=hash_token("other-token")
    )
    good, bad = make_client("good"), make_client("bad", (other, "other-token"))
    await good.register()
    await bad.register()
    await bad.send_raw("x" * (2 * 1024 * 1024))
    await good.send("heartbeat", is_leader=True, active_sessions=0)
    await good.send("session_status", session_id="nope", state="running")
    assert (await good.recv_type("error"))["code"] == "unknown_session"
    await good.close()


async def test_command_round_trip_drives_the_session(make_client, hub_agent, alice, template):
    agent, _ = hub_agent
    client = make_client()
    await client.register()
    session = await launch(alice, template)
    assert session.agent_id == agent.pk
    command = await client.recv_type("command")
    assert command["action"] == "start_session" and command["session_id"] == str(session.pk)
    assert command["spec"]["image"] == template.image and command["attempt"] == 1
    assert (await get(AgentCommand, pk=command["command_id"])).state == CommandState.SENT

    await client.send("ack", command_id=command["command_id"])
    await client.send("session_status", session_id=str(session.pk), state="starting", message="creating container")
    await client.send(
        "session_status",
        session_id=str(session.pk),
        state="running",
        streaming_ready=True,
        streaming_port=8080,
        endpoint="10.0.0.5:8080",
    )
    await client.send("result", command_id=command["command_id"], ok=True, data={"container": "abc"})
    await client.send("heartbeat", is_leader=True, active_sessions=1)
    # The hub answers unknown sessions; use that as a barrier that every frame above is processed.
    await client.send("session_status", session_id="barrier", state="running")
    assert (await client.recv_type("error"))["code"] == "unknown_session"

    stored = await get(Session, pk=session.pk)
    assert stored.state == SessionState.RUNNING and stored.streaming_ready and stored.streaming_port == 8080
    assert stored.endpoint == "10.0.0.5:8080" and stored.status_message == ""
    done = await get(AgentCommand, pk=command["command_id"])
    assert done.state == CommandState.SUCCEEDED and done.result == {"container": "abc"} and done.acked_at


async def test_failed_start_fails_the_session(make_client, alice, template):
    client = make_client()
    await client.register()
    session = await launch(alice, template)
    command = await client.recv_type("command")
    await client.send("ack", command_id=command["command_id"])
    await client.send("result", command_id=command["command_id"], ok=False, error="image not found")
    await client.send("session_status", session_id="barrier", state="running")
    await client.recv_type("error")
    stored = await get(Session, pk=session.pk)
    assert stored.state == SessionState.FAILED and "image not found" in stored.status_message
    assert (await get(AgentCommand, pk=command["command_id"])).state == CommandState.FAILED


async def test_result_for_unknown_command_is_an_error(make_client):
    client = make_client()
    await client.register()
    await client.send("result", command_id="00000000-0000-0000-0000-000000000000", ok=True)
    assert (await client.recv_type("error"))["code"] == "unknown_command"


async def test_commands_wait_for_a_leader_socket(make_client, alice, template, hub_agent):
    # A leader that is connected but has no socket on any replica yet (reconnecting).
    await database_sync_to_async(AgentInstance.objects.create)(
        agent=hub_agent[0], instance_id="i-0", is_leader=True, connected=True
    )
    session = await launch(alice, template)
    command = await get(AgentCommand, session=session)
    assert command.state == CommandState.PENDING
    client = make_client()
    await client.register()
    delivered = await client.recv_type("command")
    assert delivered["command_id"] == str(command.pk)


async def test_follower_never_receives_commands(make_client, alice, template):
    follower, leader = make_client("follower"), make_client("leader")
    await follower.register(is_leader=False)
    await leader.register(is_leader=True)
    await launch(alice, template)
    await launch(alice, template)
    assert (await leader.recv_type("command"))["action"] == "start_session"
    assert (await leader.recv_type("command"))["action"] == "start_session"
    assert await follower.nothing(0.5)


async def test_leader_change_moves_unacked_commands(make_client, alice, template, hub_agent):
    old, new = make_client("old"), make_client("new")
    await old.register(is_leader=True)
    await new.register(is_leader=False)
    session = await launch(alice, template)
    first = await old.recv_type("command")  # sent, never acked
    await old.send("leader", is_leader=False)
    await new.send("leader", is_leader=True)
    resent = await new.recv_type("command")
    assert resent["command_id"] == first["command_id"] and resent["attempt"] == 2
    instances = await database_sync_to_async(
        lambda: dict(AgentInstance.objects.filter(agent=hub_agent[0]).values_list("instance_id", "is_leader"))
    )()
    assert instances == {"old": False, "new": True}
    live = await database_sync_to_async(presence.connections)(hub_agent[0].agent_id)
    assert live["new"]["is_leader"] and not live["old"]["is_leader"]
    # The next command goes to the new leader only.
    await database_sync_to_async(lambda: None)()
    from sessions_app.services import stop_session

    await database_sync_to_async(stop_session)(session)
    assert (await new.recv_type("command"))["action"] == "stop_session"
    assert await old.nothing(0.3)


async def test_leadership_via_heartbeat(make_client, alice, template):
    a, b = make_client("a"), make_client("b")
    await a.register(is_leader=True)
    await b.register(is_leader=False)
    await a.send("heartbeat", is_leader=False)
    await b.send("heartbeat", is_leader=True)
    await b.send("session_status", session_id="barrier", state="running")
    await b.recv_type("error")
    await launch(alice, template)
    assert (await b.recv_type("command"))["action"] == "start_session"
    assert await a.nothing(0.3)


async def test_inventory_reconciliation(make_client, hub_agent, alice, template):

    agent, _ = hub_agent

    def make(state):
        return make_session(alice, template, agent, state=state)

    lost = await database_sync_to_async(make)("running")
    kept = await database_sync_to_async(make)("running")
    asleep = await database_sync_to_async(make)("hibernated")
    woke = await database_sync_to_async(make)("waking")
    # A stop whose result was lost (the replica died with it): the workload is gone, so the stop is done.
    stopped_meanwhile = await database_sync_to_async(make)("stopping")
    still_stopping = await database_sync_to_async(make)("stopping")
    inventory = [
        {"session_id": str(still_stopping.pk), "state": "running", "streaming_ready": True, "streaming_port": 8080},
        {"session_id": str(kept.pk), "state": "running", "streaming_ready": True, "streaming_port": 8080},
        {"session_id": str(asleep.pk), "state": "hibernated"},
        {"session_id": str(woke.pk), "state": "running", "streaming_ready": True, "streaming_port": 8080},
        {"session_id": "11111111-1111-1111-1111-111111111111", "state": "running"},
    ]
    client = make_client()
    await client.register(sessions=inventory)
    await client.send("session_status", session_id="barrier", state="running")
    await client.recv_type("error")
    states = await database_sync_to_async(lambda: {s.pk: s.state for s in Session.objects.filter(agent=agent)})()
    assert states[lost.pk] == "failed" and states[kept.pk] == "running"
    assert states[asleep.pk] == "hibernated" and states[woke.pk] == "running"
    assert states[stopped_meanwhile.pk] == "stopped" and states[still_stopping.pk] == "stopping"
    from streamspace.audit.models import AuditEvent

    event = await get(AuditEvent, action="agent.unknown_sessions")
    assert event.details["session_ids"] == ["11111111-1111-1111-1111-111111111111"]


async def test_follower_inventory_is_not_reconciled(make_client, hub_agent, alice, template):
    from django.utils import timezone

    agent, _ = hub_agent
    now = timezone.now()
    running = await database_sync_to_async(Session.objects.create)(
        name="r",
        user=alice,
        template=template,
        agent=agent,
        state="running",
        cpu_millicores=1,
        memory_mb=1,
        idle_timeout_s=60,
        last_activity=now,
        state_changed_at=now,
    )
    client = make_client()
    await client.register(is_leader=False)
    await client.send("session_status", session_id="barrier", state="running")
    await client.recv_type("error")
    assert (await get(Session, pk=running.pk)).state == "running"


async def test_stop_result_marks_stopped(make_client, alice, template):
    client = make_client()
    await client.register()
    session = await launch(alice, template)
    start = await client.recv_type("command")
    await client.send(
        "session_status", session_id=str(session.pk), state="running", streaming_ready=True, streaming_port=8080
    )
    await client.send("result", command_id=start["command_id"], ok=True)
    from sessions_app.services import stop_session

    await client.send("session_status", session_id="barrier", state="running")
    await client.recv_type("error")
    await database_sync_to_async(stop_session)(session)
    stop = await client.recv_type("command")
    assert stop["action"] == "stop_session"
    await client.send("result", command_id=stop["command_id"], ok=True)
    await client.send("session_status", session_id="barrier", state="running")
    await client.recv_type("error")
    assert (await get(Session, pk=session.pk)).state == "stopped"


async def test_tunnel_request_reaches_the_leader(make_client, hub_agent):
    from agents_app.dispatch import request_tunnel

    agent, _ = hub_agent
    assert not await database_sync_to_async(request_tunnel)(
        agent.pk, stream_id="s1", session_id="x", port=8080, url="ws://cp/api/v1/agents/tunnel/s1"
    )
    client = make_client()
    await client.register()
    assert await database_sync_to_async(request_tunnel)(
        agent.pk, stream_id="s1", session_id="x", port=8080, url="ws://cp/api/v1/agents/tunnel/s1"
    )
    opened = await client.recv_type("tunnel_open")
    assert opened == {
        "stream_id": "s1",
        "session_id": "x",
        "port": 8080,
        "url": "ws://cp/api/v1/agents/tunnel/s1",
        "service": "",
    }


async def test_agents_api_shows_instances_leader_pod_and_live_heartbeat(make_client, hub_agent, operator):
    from tests.support.clients import client_for

    agent, _ = hub_agent
    leader, follower = make_client("lead"), make_client("follow")
    await leader.register(is_leader=True)
    await follower.register(is_leader=False)
    body = await database_sync_to_async(lambda: client_for(operator).get(f"/api/v1/agents/{agent.agent_id}").json())()
    instances = {i["instance_id"]: i for i in body["instances"]}
    assert instances["lead"]["is_leader"] and not instances["follow"]["is_leader"]
    assert instances["lead"]["pod"] == settings.POD_NAME and instances["lead"]["connected"]
    assert 0 <= instances["lead"]["heartbeat_age_s"] < 5
    assert body["pending_commands"] == 0 and body["sessions"] == 0


async def test_embedded_mode_leader_picks_up_commands_queued_by_another_process(make_client, alice, template, settings):
    """Without Redis, a command row created where the in-memory layer cannot reach the socket
    (the job runner is another process) still reaches the leader by polling."""
    settings.AGENT_PENDING_POLL_S = 0.1  # the default without REDIS_URL is 2 s
    client = make_client()
    await client.register()
    from agents_app.models import AgentCommand

    session = await launch(alice, template)
    first = await client.recv_type("command")
    await client.send("ack", command_id=first["command_id"])
    # Simulate another process: a row appears without any channel-layer message.
    command = await database_sync_to_async(AgentCommand.objects.create)(
        agent_id=session.agent_id, session=session, action="stop_session", spec={}
    )
    delivered = await client.recv_type("command", timeout=5)
    assert delivered["command_id"] == str(command.pk)


async def test_not_leader_result_requeues_instead_of_failing(make_client, alice, template):
    """A leader that lost its lease between ack and execution answers not_leader: the command
    goes to the next leader and the session does not fail."""
    old, new = make_client("old"), make_client("new")
    await old.register(is_leader=True)
    await new.register(is_leader=False)
    session = await launch(alice, template)
    command = await old.recv_type("command")
    await old.send("ack", command_id=command["command_id"])
    await old.send("leader", is_leader=False)
    await old.send(
        "result", command_id=command["command_id"], ok=False, error="not_leader: leadership lost before executing"
    )
    await new.send("leader", is_leader=True)
    resent = await new.recv_type("command")
    assert resent["command_id"] == command["command_id"]
    assert (await get(Session, pk=session.pk)).state == SessionState.PENDING


async def test_status_changes_reach_the_portal_and_the_event_bus_in_order_even_after_close(
    make_client, alice, template
):
    """The hub applies frames and reads the next ones first; the portal broadcast and the
    ``session.*`` events of their changes follow on a per-connection queue, in order, and are
    still delivered when the agent disconnects right after sending. Statuses applied in one
    burst are broadcast once, as the session is after them; each change has its event."""
    import asyncio

    from channels.layers import get_channel_layer

    from sessions_app import notify
    from streamspace import events

    seen: list[str] = []
    events.subscribe(seen_event := lambda envelope: seen.append(envelope["event"]))
    layer = get_channel_layer()
    watcher = await layer.new_channel()
    await layer.group_add(notify.user_group(alice.pk), watcher)
    try:
        client = make_client()
        await client.register()
        session = await launch(alice, template)
        assert (await asyncio.wait_for(layer.receive(watcher), 5))["session"]["state"] == "pending"
        command = await client.recv_type("command")
        await client.send("ack", command_id=command["command_id"])
        await client.send("session_status", session_id=str(session.pk), state="starting")
        await client.send("session_status", session_id=str(session.pk), state="running", streaming_ready=True)
        await client.send("result", command_id=command["command_id"], ok=True)
        await client.close()  # at once: the queued fan-out still goes out
        states = [(await asyncio.wait_for(layer.receive(watcher), 5))["session"]["state"]]
        if states[0] == "starting":  # the first status was applied before the others arrived
            states.append((await asyncio.wait_for(layer.receive(watcher), 5))["session"]["state"])
        assert states[-1] == "running"
        assert [name for name in seen if name.startswith("session.")] == ["session.created", "session.started"]
    finally:
        events.unsubscribe(seen_event)
        await layer.group_discard(notify.user_group(alice.pk), watcher)


async def test_a_failing_fan_out_never_touches_the_frame_path(make_client, alice, template, monkeypatch):
    from sessions_app import notify

    def broken(changes, actor):
        raise RuntimeError("broadcast exploded")

    client = make_client()
    await client.register()
    session = await launch(alice, template)
    monkeypatch.setattr(notify, "_fan_out", broken)
    command = await client.recv_type("command")
    await client.send("session_status", session_id=str(session.pk), state="running", streaming_ready=True)
    await client.send("result", command_id=command["command_id"], ok=True)
    await client.send("session_status", session_id="barrier", state="running")
    assert (await client.recv_type("error"))["code"] == "unknown_session"  # nothing else came first
    assert (await get(Session, pk=session.pk)).state == SessionState.RUNNING
    await client.send("heartbeat", is_leader=True, active_sessions=1)
    assert await client.nothing(0.3)
    await client.close()


async def test_a_launch_with_a_connected_leader_sends_without_a_claim(make_client, alice, template, hub_agent):
    """select_agent finds the leader in the same query; the command row is written ``sent``
    to it and the frame goes out on commit: no claim query on the way."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = make_client("lead")
    await client.register()

    def launch_counting():
        from sessions_app.services import launch_session

        with CaptureQueriesContext(connection) as queries:
            session = launch_session(alice, template)
        return session, [q["sql"] for q in queries.captured_queries]

    session, sql = await database_sync_to_async(launch_counting)()
    assert not [q for q in sql if q.startswith('SELECT "agents_app_agentinstance"')], sql  # no leader lookup
    assert not [q for q in sql if q.startswith("UPDATE") and "agents_app_agentcommand" in q], sql
    delivered = await client.recv_type("command")
    command = await get(AgentCommand, session=session)
    assert delivered["command_id"] == str(command.pk) and delivered["attempt"] == 1
    assert (command.state, command.attempts, command.instance_id) == (CommandState.SENT, 1, "lead")
    await client.close()


async def test_an_older_pending_command_keeps_its_place(make_client, alice, template, hub_agent):
    """A command waiting in ``pending`` (its send failed) goes out before a newer one: the
    newer launch takes the claim path, which sends both in creation order."""
    client = make_client()
    await client.register()
    first = await launch(alice, template)
    await client.recv_type("command")
    await database_sync_to_async(
        lambda: AgentCommand.objects.filter(session=first).update(state=CommandState.PENDING)
    )()
    second = await launch(alice, template)
    ids = [(await client.recv_type("command"))["session_id"] for _ in range(2)]
    assert ids == [str(first.pk), str(second.pk)]
    await client.close()


async def test_a_direct_send_to_a_former_leader_is_handed_to_the_new_one(
    make_client, alice, template, hub_agent, monkeypatch
):
    """The leader changes between agent selection and commit: the old leader's socket gives
    the command back and it reaches the new leader."""
    from sessions_app import placement

    old, new = make_client("old"), make_client("new")
    await old.register(is_leader=True)
    await new.register(is_leader=False)
    real_select = placement.select_agent

    def stale_select(template, **resources):  # what select_agent read just before leadership moved
        agent = real_select(template, **resources)
        assert agent.leader_instance_id == "new"
        agent.leader_instance_id, agent.leader_channel = (
            AgentInstance.objects.filter(instance_id="old").values_list("instance_id", "channel_name").get()
        )
        return agent

    await old.send("leader", is_leader=False)
    await old.send("session_status", session_id="barrier", state="running")
    await old.recv_type("error")
    await new.send("leader", is_leader=True)
    await new.send("session_status", session_id="barrier", state="running")
    await new.recv_type("error")
    monkeypatch.setattr(placement, "select_agent", stale_select)
    session = await launch(alice, template)
    delivered = await new.recv_type("command")
    assert delivered["session_id"] == str(session.pk)
    assert await old.nothing(0.3)
    await old.close()
    await new.close()


async def test_registered_agent_sockets_are_counted_on_this_replica(make_client, hub_agent):
    from prometheus_client import REGISTRY

    def count() -> float:
        return REGISTRY.get_sample_value("streamspace_hub_agent_connections", {"platform": "docker"}) or 0.0

    before = count()
    client = make_client("counted")
    await client.register(is_leader=True)
    await client.send("session_status", session_id="barrier", state="running")
    await client.recv_type("error")  # the register frame has been handled
    assert count() == before + 1
    await client.close()
    assert count() == before

"""The agent's connection against a fake control plane (a real websockets server)."""

from __future__ import annotations

import asyncio
import random
import sys
import types
from pathlib import Path

import pytest

from agent_runtime.config import AgentConfig
from agent_runtime.connection import AgentConnection, backoff_delays
from agent_runtime.leader import AlwaysLeader
from tests.support.fakes import CrashingBackend, FakeControlPlane, ManualElector, RecordingBackend, SlowReadyBackend

IMAGE = "streamspace-test-session:latest"
SPEC = {"image": IMAGE, "user": "alice", "template": "t"}


class Running:
    def __init__(self, cp: FakeControlPlane, backend, elector, tmp_path: Path, token: str | None = None, **config):
        self.config = AgentConfig(
            control_plane=cp.url,
            token=token or cp.token,
            agent_id="agent-1",
            platform="docker",
            instance_id="i-1",
            data_dir=tmp_path,
            **config,
        )
        self.backend = backend
        self.elector = elector
        self.connection = AgentConnection(self.config, backend, elector)
        self.task = asyncio.create_task(self.connection.run())

    async def close(self) -> None:
        if not self.task.done():
            await self.connection.shutdown(drain_timeout=5)
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def cp():
    async with FakeControlPlane() as server:
        yield server


@pytest.fixture
async def start_agent(cp, tmp_path):
    running: list[Running] = []

    async def _start(backend=None, elector=None, **config) -> Running:
        agent = Running(cp, backend or RecordingBackend(), elector or AlwaysLeader(), tmp_path, **config)
        running.append(agent)
        return agent

    yield _start
    for agent in running:
        await agent.close()


def types_of(link) -> list[str]:
    return [f.type for f in link.frames]


async def test_register_first_with_token_and_inventory(cp, start_agent):
    backend = RecordingBackend()
    backend.sessions["s-existing"] = "running"
    await start_agent(backend)
    link = await cp.link()
    assert link.headers["authorization"] == "Bearer test-token"
    assert link.frames[0].type == "register"
    reg = link.register
    assert (reg.agent_id, reg.instance_id, reg.platform, reg.is_leader) == ("agent-1", "i-1", "docker", True)
    assert [s.session_id for s in reg.sessions] == ["s-existing"]
    assert reg.capacity.cpu_millicores > 0


async def test_follower_registers_without_inventory(cp, start_agent):
    backend = RecordingBackend()
    backend.sessions["s-existing"] = "running"
    await start_agent(backend, ManualElector(leader=False))
    link = await cp.link()
    assert link.register.is_leader is False
    assert link.register.sessions == []


async def test_ack_then_result_then_status(cp, start_agent):
    await start_agent()
    link = await cp.link()
    cid = await link.command("start_session", "s1", SPEC)
    result = await cp.wait_result(cid)
    assert result.ok and result.data["state"] == "running"
    await cp.wait_for(lambda: link.of_type("session_status"))
    order = [(f.type, getattr(f.payload, "command_id", None)) for f in link.frames if f.type in ("ack", "result")]
    assert order == [("ack", cid), ("result", cid)]
    status = link.of_type("session_status")[0].payload
    assert (status.session_id, status.state, status.streaming_ready, status.endpoint) == (
        "s1",
        "running",
        True,
        "127.0.0.1:9",
    )
    assert types_of(link).index("result") < types_of(link).index("session_status")


async def test_heartbeats_follow_the_registered_interval(cp, start_agent):
    await start_agent()
    link = await cp.link()
    await cp.wait_for(lambda: len(link.of_type("heartbeat")) >= 3, timeout=5)
    beats = link.of_type("heartbeat")
    gaps = [b.ts - a.ts for a, b in zip(beats, beats[1:], strict=False)]
    assert all(0.1 < gap < 1.0 for gap in gaps), gaps  # interval 0.2 s from the registered frame
    assert beats[0].payload.is_leader is True


async def test_one_session_in_order_sessions_concurrently(cp, start_agent):
    backend = RecordingBackend(delay=0.3)
    await start_agent(backend)
    link = await cp.link()
    a1 = await link.command("start_session", "A", SPEC)
    a2 = await link.command("hibernate_session", "A")
    a3 = await link.command("wake_session", "A", SPEC)
    b1 = await link.command("start_session", "B", SPEC)
    for cid in (a1, a2, a3, b1):
        assert (await cp.wait_result(cid)).ok
    calls = {(action, sid): (start, end) for action, sid, start, end in backend.calls}
    a_calls = [c for c in backend.calls if c[1] == "A"]
    assert [c[0] for c in a_calls] == ["start", "hibernate", "wake"]
    for before, after in zip(a_calls, a_calls[1:], strict=False):
        assert after[2] >= before[3], "commands of one session overlapped"
    a_start, b_start = calls[("start", "A")], calls[("start", "B")]
    assert b_start[0] < a_start[1], "different sessions did not run concurrently"
    # every ack came before the first result: acks are sent before work starts
    kinds = [f.type for f in link.frames if f.type in ("ack", "result")]
    assert kinds[:4] == ["ack"] * 4


async def test_duplicates_run_once(cp, start_agent):
    backend = RecordingBackend(delay=0.3)
    await start_agent(backend)
    link = await cp.link()
    cid = await link.command("start_session", "s1", SPEC)
    await link.command("start_session", "s1", SPEC, command_id=cid)  # while running
    first = await cp.wait_result(cid)
    await link.command("start_session", "s1", SPEC, command_id=cid)  # after it finished
    await cp.wait_for(lambda: len([f for f in link.of_type("result") if f.payload.command_id == cid]) == 2)
    assert len([c for c in backend.calls if c[0] == "start"]) == 1
    acks = [f for f in link.of_type("ack") if f.payload.command_id == cid]
    assert len(acks) == 2
    results = [f.payload for f in link.of_type("result") if f.payload.command_id == cid]
    assert results[0] == results[1] == first


async def test_malformed_commands_get_failed_results_and_the_agent_keeps_going(cp, start_agent):
    await start_agent()
    link = await cp.link()
    unknown = await link.command("reboot_host", "s1", SPEC)
    no_spec = await link.command("start_session", "s2")
    bad_image = await link.command("start_session", "s3", {**SPEC, "image": "Not An Image!"})
    bad_sid = await link.command("start_session", "../etc", SPEC)
    bad_types = await link.command("start_session", "s4", {**SPEC, "cpu_millicores": "lots"})
    await link.send("command", {"command_id": "no-session", "action": "start_session"})  # fails the schema
    await link.ws.send("this is not json")
    await link.send("mystery", {})
    crash_free = await link.command("hibernate_session", "never-started")

    errors = {
        cid: (await cp.wait_result(cid))
        for cid in (unknown, no_spec, bad_image, bad_sid, bad_types, "no-session", crash_free)
    }
    assert all(not r.ok for r in errors.values())
    assert "unknown action 'reboot_host'" in errors[unknown].error
    assert "missing 'image'" in errors[no_spec].error
    assert "not a valid container image reference" in errors[bad_image].error
    assert "invalid session_id" in errors[bad_sid].error
    assert "cpu_millicores" in errors[bad_types].error
    assert "invalid command" in errors["no-session"].error
    assert "does not exist" in errors[crash_free].error
    ok = await link.command("start_session", "s5", SPEC)
    assert (await cp.wait_result(ok)).ok
    assert not link.closed.is_set()


async def test_a_backend_bug_is_a_failed_result(cp, start_agent):
    await start_agent(CrashingBackend())
    link = await cp.link()
    cid = await link.command("start_session", "s1", SPEC)
    result = await cp.wait_result(cid)
    assert not result.ok and "internal agent error" in result.error and "backend bug" in result.error


async def test_streaming_ready_reported_when_the_port_answers(cp, start_agent):
    await start_agent(SlowReadyBackend(ready_after=0.6))
    link = await cp.link()
    cid = await link.command("start_session", "s1", SPEC)
    assert (await cp.wait_result(cid)).data.get("streaming_ready", False) is False
    ready = await cp.wait_for(lambda: [f for f in link.of_type("session_status") if f.payload.streaming_ready])
    assert ready[0].payload.state == "running"


def test_backoff_is_full_jitter_exponential_and_capped():
    """Attempt n waits U[0, min(cap, initial·2ⁿ)]: within its bounds, spread over all of them."""
    draws = [[] for _ in range(10)]
    for seed in range(400):
        delays = backoff_delays(0.5, 30.0, random.Random(seed))
        for n in range(10):
            draws[n].append(next(delays))
    for n, values in enumerate(draws):
        ceiling = min(30.0, 0.5 * 2**n)
        assert all(0 <= value <= ceiling for value in values), n
        # spread over the whole window: both ends are reached and the mean sits in the middle
        assert min(values) < 0.05 * ceiling and max(values) > 0.95 * ceiling, n
        assert 0.4 * ceiling < sum(values) / len(values) < 0.6 * ceiling, n
    assert max(draws[-1]) <= 30.0 and max(draws[-1]) > 28.5  # capped, and the cap is reached


def test_first_reconnect_of_a_herd_is_spread():
    """Agents that lose their replica together retry over the whole first window: no two
    hundredths of it hold more than a few of 1,000 agents."""
    first = sorted(next(backoff_delays(0.5, 30.0, random.Random(seed))) for seed in range(1000))
    assert first[0] < 0.01 and first[-1] > 0.49
    buckets = [0] * 20
    for value in first:
        buckets[min(19, int(value / 0.025))] += 1
    assert max(buckets) < 80  # 50 expected per 25 ms bucket


async def test_reconnects_with_backoff_and_resumes(cp, start_agent):
    backend = RecordingBackend(delay=0.4)
    await start_agent(backend, backoff_initial=0.1, backoff_max=0.8)
    link = await cp.link()
    cid = await link.command("start_session", "s1", SPEC)
    await cp.wait_for(lambda: link.of_type("ack"))
    cp.refuse_next = 4
    await link.ws.close(1012, "restarting")  # the control plane drops us mid-command
    second = await cp.link(1, timeout=15)
    assert second is not link and second.register is not None
    # the refused attempts were spaced by full-jitter delays within their growing windows
    attempts = cp.attempt_times[1:]
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert len(gaps) >= 4
    for n, gap in enumerate(gaps[:4]):
        ceiling = min(0.8, 0.1 * 2 ** (n + 1))
        assert 0 <= gap <= ceiling + 0.25, (n, gaps)
    # the result of the command that finished while we were away arrives on the new socket
    await cp.wait_for(lambda: second.of_type("result"))
    assert second.of_type("result")[0].payload.command_id == cid
    # and the resumed connection works
    again = await second.command("hibernate_session", "s1")
    assert (await cp.wait_result(again)).ok


async def test_bad_token_keeps_retrying(cp, start_agent):
    await start_agent(token="wrong-token", backoff_initial=0.05, backoff_max=0.1)
    for _ in range(100):
        if cp.rejected >= 3:
            break
        await asyncio.sleep(0.05)
    assert cp.rejected >= 3 and cp.links == []


async def test_leadership_changes_are_announced_and_followers_refuse(cp, start_agent):
    backend = RecordingBackend()
    backend.sessions["s-old"] = "running"
    elector = ManualElector(leader=False)
    await start_agent(backend, elector)
    link = await cp.link()
    refused = await link.command("start_session", "s1", SPEC)
    await cp.wait_for(lambda: link.of_type("leader"))
    assert link.of_type("leader")[0].payload.is_leader is False
    await asyncio.sleep(0.2)
    assert not [f for f in link.of_type("ack") if f.payload.command_id == refused]  # not acked: re-sent later
    assert backend.calls == []
    elector.set_leader(True)
    await cp.wait_for(lambda: [f for f in link.of_type("leader") if f.payload.is_leader])
    status = await cp.wait_for(lambda: [f for f in link.of_type("session_status") if f.payload.session_id == "s-old"])
    assert status[0].payload.state == "running"
    kinds = types_of(link)
    assert kinds.index("session_status") > max(i for i, k in enumerate(kinds) if k == "leader")
    taken = await link.command("start_session", "s1", SPEC, command_id=refused)  # the hub's re-send
    assert (await cp.wait_result(taken)).ok


async def test_shutdown_drains_running_commands(cp, start_agent):
    backend = RecordingBackend(delay=0.5)
    elector = ManualElector(leader=True)
    agent = await start_agent(backend, elector)
    link = await cp.link()
    cid = await link.command("start_session", "s1", SPEC)
    await cp.wait_for(lambda: link.of_type("ack"))
    await agent.connection.shutdown(drain_timeout=5)
    assert (await cp.wait_result(cid)).ok  # finished and reported before the socket closed
    assert elector.stopped
    leader_frames = link.of_type("leader")
    assert leader_frames and leader_frames[-1].payload.is_leader is False
    await asyncio.wait_for(link.closed.wait(), 5)


async def test_tunnel_open_goes_to_run_tunnel(cp, start_agent, monkeypatch):
    calls = []

    async def run_tunnel(payload, *, token, backend):
        calls.append((payload, token, backend))

    monkeypatch.setitem(sys.modules, "agent_runtime.tunnel", types.SimpleNamespace(run_tunnel=run_tunnel))
    agent = await start_agent()
    link = await cp.link()
    await link.send("tunnel_open", {"stream_id": "st1", "session_id": "s1", "port": 8080, "url": "ws://x/t"})
    for _ in range(100):
        if calls:
            break
        await asyncio.sleep(0.02)
    payload, token, backend = calls[0]
    assert (payload.stream_id, payload.port, token, backend) == ("st1", 8080, "test-token", agent.backend)


async def test_tunnel_open_without_tunnel_support_is_logged(cp, start_agent, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "agent_runtime.tunnel", None)  # import fails
    await start_agent()
    link = await cp.link()
    await link.send("tunnel_open", {"stream_id": "st1", "session_id": "s1", "port": 8080})
    cid = await link.command("start_session", "s1", SPEC)
    assert (await cp.wait_result(cid)).ok
    assert any("no tunnel support" in r.getMessage() for r in caplog.records)


class BrokenInventoryBackend(RecordingBackend):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.broken = True

    async def inventory(self):
        if self.broken:
            from agent_runtime.backends.base import BackendError

            raise BackendError("docker: engine unreachable")
        return await super().inventory()


async def test_a_leader_without_inventory_does_not_register(cp, start_agent):
    """An empty inventory would tell the hub that every session is lost: wait for the backend."""
    backend = BrokenInventoryBackend()
    await start_agent(backend, backoff_initial=0.05, backoff_max=0.1)
    await asyncio.sleep(0.5)
    assert len(cp.attempt_times) >= 2 and cp.links == []  # it kept trying without registering
    backend.broken = False
    link = await cp.link()
    assert link.register.is_leader is True


def test_logs_are_json_lines():
    import json
    import logging

    from agent_runtime.logs import JsonFormatter

    record = logging.LogRecord("agent", logging.INFO, __file__, 1, "command done", (), None)
    record.command_id = "c1"
    line = json.loads(JsonFormatter().format(record))
    assert (line["level"], line["msg"], line["command_id"], line["logger"]) == ("info", "command done", "c1", "agent")

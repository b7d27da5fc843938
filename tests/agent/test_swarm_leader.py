"""HA_BACKEND=swarm: the lease record's compare-and-swap against a real Swarm manager, then
two real agent processes contending for it (kill -9, SIGSTOP, never two leaders)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sys
import time

import docker.errors
import pytest

from agent_runtime.leader.swarm import LABEL_HOLDER, SwarmLease, lease_service_name
from tests.support.docker import TEST_IMAGE
from tests.support.fakes import FakeControlPlane, leading, link_of
from tests.support.processes import spawn_agent

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FAST = {"LEASE_DURATION": "3s", "RENEW_DEADLINE": "2s", "RETRY_PERIOD": "500ms"}
RENEW_DEADLINE_S = 2.0


@pytest.fixture
def lease_key(swarm_manager, docker_client):
    key = f"test-swarm-{secrets.token_hex(4)}"
    yield key
    with contextlib.suppress(docker.errors.NotFound):
        docker_client.services.get(lease_service_name(key)).remove()


async def test_the_record_is_written_by_compare_and_swap(lease_key):
    a = SwarmLease(lease_key, lease_duration=1.0, identity="a")
    b = SwarmLease(lease_key, lease_duration=1.0, identity="b")
    try:
        assert await a.try_acquire() and await a.try_acquire()  # idempotent for the holder
        assert await a.holder() == a.identity
        assert not await b.try_acquire() and not await b.renew()
        await b.release()  # not b's: a keeps it
        assert await a.holder() == a.identity
        assert await a.renew()
        # a renew at a stale version is refused: Swarm's version index is the compare-and-swap
        stale = a._read()
        assert await a.renew()
        assert a._write(stale, a.identity) is False
        # b must see the same record unchanged for a whole lease duration before taking it
        assert not await b.try_acquire()
        started = time.monotonic()
        while not await b.try_acquire():
            await asyncio.sleep(0.1)
        assert time.monotonic() - started >= 1.0 - 0.05
        assert await b.holder() == b.identity
        assert not await a.renew()  # a lost it
        await b.release()
        assert await a.holder() is None
        assert await a.try_acquire()  # a released lease is taken at once
    finally:
        await a.close()
        await b.close()


def first_leader_frame(link):
    frames = [f for f in link.frames if f.type == "leader" and f.payload.is_leader]
    return frames[0] if frames else None


@pytest.fixture
async def swarm_contenders(tmp_path, request, lease_key):
    """Two agent processes (a, b) of one agent electing on the Swarm lease ``lease_key``."""
    cp = FakeControlPlane(heartbeat_interval_s=0.5)
    await cp.start()
    env = {"ENABLE_HA": "true", "HA_BACKEND": "swarm", "LEASE_KEY": lease_key, **FAST}
    procs = []
    try:
        a = await spawn_agent(cp.url, cp.token, instance_id="a", data_dir=tmp_path / "a", env=env)
        procs.append(a)
        await cp.wait_for(lambda: (link := link_of(cp, "a")) and leading(link), timeout=30)
        b = await spawn_agent(cp.url, cp.token, instance_id="b", data_dir=tmp_path / "b", env=env)
        procs.append(b)
        await cp.wait_for(lambda: link_of(cp, "b"), timeout=30)
        assert not leading(link_of(cp, "b"))
        yield cp, a, b
    finally:
        failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
        for proc in procs:
            proc.signal(signal.SIGCONT)
            await proc.stop()
            if failed:
                sys.stderr.write(f"--- agent {proc.instance_id}\n{proc.log()[-4000:]}\n")
        await cp.stop()


async def test_kill_9_the_swarm_leader_and_the_follower_takes_over(swarm_contenders):
    cp, a, b = swarm_contenders
    killed_at = time.monotonic()
    a.signal(signal.SIGKILL)
    link_b = link_of(cp, "b")
    await cp.wait_for(lambda: leading(link_b), timeout=15)
    failover = time.monotonic() - killed_at
    print(f"\nswarm failover after kill -9: {failover:.2f} s (LEASE_DURATION=3s RETRY_PERIOD=0.5s)")
    cid = await link_b.command("stop_session", "s-any", {})
    assert (await cp.wait_result(cid)).ok  # the new leader acts


async def test_a_paused_swarm_leader_stops_acting_before_its_lease_is_taken(swarm_contenders, tmp_path):
    cp, a, b = swarm_contenders
    link_a, link_b = link_of(cp, "a"), link_of(cp, "b")
    stopped_at = time.time()
    a.signal(signal.SIGSTOP)
    await cp.wait_for(lambda: leading(link_b), timeout=15)
    # a's last renew began before the pause, so its mandate ended RENEW_DEADLINE after it at
    # the latest; b may only lead after that: never two leaders at once
    assert first_leader_frame(link_b).ts - stopped_at >= RENEW_DEADLINE_S
    demo = ["{python}", "-m", "agent_runtime.demo_app", "--port", "{port}", "--home", "{home}"]
    stale = await link_a.command("start_session", "s-stale", {"command": demo, "user": "alice"})
    frames_before = len(link_a.frames)
    a.signal(signal.SIGCONT)
    await cp.wait_for(
        lambda: any(f.type == "leader" and not f.payload.is_leader for f in link_a.frames[frames_before:])
    )
    await asyncio.sleep(1.0)  # give a every chance to (wrongly) act
    assert not [f for f in link_a.frames if f.type in ("ack", "result") and f.payload.command_id == stale]
    assert not (tmp_path / "a" / "local-backend" / "state.json").exists()  # nothing was started
    assert leading(link_b) and not leading(link_a)
    taken = await link_b.command("start_session", "s-stale", {"command": demo, "user": "alice"}, command_id=stale)
    assert (await cp.wait_result(taken, timeout=20)).ok  # the re-sent command runs on the real leader
    await link_b.command("stop_session", "s-stale", {})


async def test_sigterm_hands_the_swarm_lease_over_at_once(swarm_contenders, docker_client, lease_key):
    cp, a, b = swarm_contenders
    record = docker_client.services.get(lease_service_name(lease_key)).attrs["Spec"]["Labels"]
    assert record[LABEL_HOLDER].startswith("a:")
    stopped = time.monotonic()
    await a.stop()  # SIGTERM: drain, then release the lease
    link_b = link_of(cp, "b")
    await cp.wait_for(lambda: leading(link_b), timeout=10)
    assert time.monotonic() - stopped < 3.0  # not a lease expiry: the record was released


async def test_an_agent_in_swarm_mode_runs_sessions_and_a_new_leader_finds_them(
    swarm_manager, docker_client, docker_agent_id, lease_key, tmp_path
):
    """The whole path through agent processes: STREAMSPACE_DOCKER_MODE=swarm with
    HA_BACKEND=swarm; the follower that takes over lists the session the dead leader started."""
    env = {
        "ENABLE_HA": "true", "HA_BACKEND": "swarm", "LEASE_KEY": lease_key, **FAST,
        "STREAMSPACE_DOCKER_MODE": "swarm", "STREAMSPACE_DOCKER_NETWORK": "streamspace-swarm-tests",
        "STREAMSPACE_DOCKER_STOP_TIMEOUT": "2",
    }  # fmt: skip
    session_id = f"swarm-{secrets.token_hex(4)}"
    spec = {"image": TEST_IMAGE, "user": docker_agent_id, "persistent_home": False}
    procs = []
    try:
        async with FakeControlPlane(heartbeat_interval_s=0.5) as cp:
            for name in ("a", "b"):
                procs.append(
                    await spawn_agent(
                        cp.url, cp.token, instance_id=name, agent_id=docker_agent_id, platform="docker",
                        data_dir=tmp_path / name, env=env,
                    )
                )  # fmt: skip
                await cp.wait_for(lambda name=name: link_of(cp, name), timeout=30)
            await cp.wait_for(lambda: leading(link_of(cp, "a")) or leading(link_of(cp, "b")), timeout=30)
            leader, follower = ("a", "b") if leading(link_of(cp, "a")) else ("b", "a")
            link = link_of(cp, leader)
            cid = await link.command("start_session", session_id, spec)
            assert (await cp.wait_result(cid, timeout=60)).ok
            await cp.wait_for(
                lambda: any(f.payload.session_id == session_id and f.payload.streaming_ready for f in link.of_type("session_status")),
                timeout=30,
            )  # fmt: skip
            procs[0 if leader == "a" else 1].signal(signal.SIGKILL)
            new = link_of(cp, follower)
            await cp.wait_for(lambda: leading(new), timeout=15)
            await cp.wait_for(
                lambda: any(f.payload.session_id == session_id and f.payload.state == "running" for f in new.of_type("session_status")),
                timeout=30,
            )  # fmt: skip
            cid = await new.command("stop_session", session_id, {})
            assert (await cp.wait_result(cid, timeout=60)).ok
            with pytest.raises(docker.errors.NotFound):
                docker_client.services.get(f"streamspace-{session_id}")
    finally:
        for proc in procs:
            await proc.stop()
        for service in docker_client.services.list(filters={"label": f"streamspace.managed-by={docker_agent_id}"}):
            service.remove()

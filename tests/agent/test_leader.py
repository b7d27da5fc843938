"""Leader election: the elector's rules in-process, then real agent processes per backend."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import secrets
import signal
import socket
import sys
import time

import pytest

from agent_runtime.config import LeaseConfig
from agent_runtime.leader import LeaderElector, Lease, make_elector
from agent_runtime.leader.file import FileLease
from tests.support.ci import unavailable
from tests.support.fakes import FakeControlPlane, leading, link_of
from tests.support.processes import spawn_agent
from tests.support.waits import until

FAST = {"LEASE_DURATION": "3s", "RENEW_DEADLINE": "2s", "RETRY_PERIOD": "500ms"}
REDIS_URL = os.environ.get("REDIS_URL", "")


def need_redis():
    if not REDIS_URL:
        unavailable("needs REDIS_URL")


def fast_config(**overrides) -> LeaseConfig:
    values = {"enabled": True, "lease_duration": 1.5, "renew_deadline": 1.0, "retry_period": 0.2, "lease_key": "k"}
    return LeaseConfig(**{**values, **overrides})


class FlakyLease(Lease):
    """A lease whose renewals can be made to fail or hang."""

    def __init__(self):
        self.mode = "ok"

    async def try_acquire(self) -> bool:
        return self.mode == "ok"

    async def renew(self) -> bool:
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return self.mode == "ok"

    async def release(self) -> None:
        pass


# --- the elector, in-process -----------------------------------------------------------------
async def test_file_lease_excludes_a_second_holder(tmp_path):
    a, b = FileLease(tmp_path / "lock", identity="a"), FileLease(tmp_path / "lock", identity="b")
    assert await a.try_acquire() and await a.try_acquire()  # idempotent for the holder
    assert not await b.try_acquire() and not await b.renew()
    assert json.loads((tmp_path / "lock").read_text())["identity"] == "a"
    await b.release()  # not b's: must not free a's lease
    assert await a.holder() == "a"
    await a.release()
    assert await a.holder() is None
    assert await b.try_acquire() and not await a.try_acquire() and not await a.renew()
    (tmp_path / "lock").unlink()  # a deleted lease file is a lost lease: b must not keep acting
    assert not await b.renew()
    assert await a.try_acquire()
    await a.release()


async def test_file_lease_expires_when_its_holder_stops_renewing(tmp_path):
    a = FileLease(tmp_path / "lock", identity="a", lease_duration=0.3)
    b = FileLease(tmp_path / "lock", identity="b", lease_duration=0.3)
    a.host = b.host = "a host whose pids this test cannot check"  # expiry only, as across hosts
    assert await a.try_acquire() and not await b.try_acquire()
    await until(lambda: b.try_acquire(), timeout=3)  # a stopped renewing: the deadline passed
    assert not await a.renew()  # a's compare-and-renew fails on b's record
    assert await b.holder() == "b"


async def test_a_dead_holder_on_this_host_frees_the_lease_at_once(tmp_path):
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    record = {"holder": "x:1", "identity": "x", "deadline": time.time() + 60, "host": socket.gethostname()}
    (tmp_path / "lock").write_text(json.dumps({**record, "pid": dead.pid}))
    assert await FileLease(tmp_path / "lock", identity="b").try_acquire()
    (tmp_path / "lock").write_text(json.dumps({**record, "pid": os.getppid()}))  # alive: held until its deadline
    assert not await FileLease(tmp_path / "lock", identity="c").try_acquire()


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"holder": "x", "deadline": "soon"}'])
async def test_a_torn_or_foreign_lease_file_is_free(tmp_path, content):
    (tmp_path / "lock").write_text(content)
    assert await FileLease(tmp_path / "lock", identity="b").try_acquire()


async def test_a_lease_operation_gives_up_when_the_file_stays_locked(tmp_path, monkeypatch):
    monkeypatch.setattr("agent_runtime.leader.file.LOCK_WAIT_S", 0.1)
    (tmp_path / "lock").touch()
    fd = os.open(tmp_path / "lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(TimeoutError, match="stayed locked"):
            await FileLease(tmp_path / "lock", identity="b").try_acquire()
    finally:
        os.close(fd)


async def test_elector_steps_down_when_renewals_fail():
    lease = FlakyLease()
    elector = LeaderElector(lease, fast_config())
    changes: list[bool] = []
    elector.subscribe(changes.append)
    task = asyncio.create_task(elector.run())
    await until(lambda: elector.is_leader, timeout=10)
    lease.mode = "fail"
    failed_at = time.monotonic()
    await until(lambda: changes == [True, False], timeout=3)
    assert not elector.is_leader
    assert time.monotonic() - failed_at <= 1.0 + 0.2 + 0.1  # within the renew deadline (+ one retry)
    task.cancel()


async def test_a_hung_renewal_cannot_extend_the_mandate():
    lease = FlakyLease()
    elector = LeaderElector(lease, fast_config())
    task = asyncio.create_task(elector.run())
    await until(lambda: elector.is_leader, timeout=10)
    lease.mode = "hang"
    hung_at = time.monotonic()
    await until(lambda: not elector.is_leader, timeout=3)
    assert time.monotonic() - hung_at <= 1.0 + 0.1
    task.cancel()


async def test_a_stalled_loop_is_not_leader_when_it_resumes():
    """What a SIGSTOP looks like from inside: the loop did not run for longer than the deadline."""
    lease = FlakyLease()
    elector = LeaderElector(lease, fast_config())
    changes: list[bool] = []
    elector.subscribe(changes.append)
    task = asyncio.create_task(elector.run())
    await until(lambda: elector.is_leader, timeout=10)
    time.sleep(1.1)  # blocks the event loop on purpose: nothing can renew meanwhile
    assert elector.is_leader is False  # the very first check after resuming refuses
    assert elector.check() is False and changes[-1] is False
    task.cancel()


def test_without_ha_the_agent_is_always_leader(tmp_path):
    elector = make_elector(LeaseConfig.from_env("docker", tmp_path, {}), identity="x")
    assert elector.is_leader


@pytest.mark.postgres
async def test_redis_lease_compare_and_renew_and_delete():
    need_redis()
    from agent_runtime.leader.redis import RedisLease

    key = f"test-lease-{secrets.token_hex(4)}"
    a = RedisLease(REDIS_URL, key, lease_duration=1.0, identity="a")
    b = RedisLease(REDIS_URL, key, lease_duration=1.0, identity="b")
    try:
        assert await a.try_acquire() and not await b.try_acquire()
        assert not await b.renew()
        await b.release()  # not b's: must not delete a's lease
        assert await a.holder() == a.token
        await asyncio.sleep(1.2)  # a stops renewing: the lease expires
        assert await b.try_acquire()
        assert not await a.renew()  # a's compare-and-renew fails on b's token
        await b.release()
        assert await a.holder() is None
    finally:
        await a.close()
        await b.close()


# --- real agent processes ------------------------------------------------------------------------
def ha_env(backend: str, tmp_path, key: str) -> dict[str, str]:
    env = {"ENABLE_HA": "true", "HA_BACKEND": backend, "LEASE_KEY": key, **FAST}
    if backend == "file":
        env["FILE_LOCK_PATH"] = str(tmp_path / "leader.lock")
    else:
        env["REDIS_URL"] = REDIS_URL
    return env


@pytest.fixture
async def contenders(tmp_path, request):
    """Two agent processes (a, b) of one agent, both connected to a fake control plane."""
    started = []

    async def _start(backend: str):
        if backend == "redis":
            need_redis()
        cp = FakeControlPlane(heartbeat_interval_s=0.5)
        await cp.start()
        env = ha_env(backend, tmp_path, f"test-{secrets.token_hex(4)}")
        a = await spawn_agent(cp.url, cp.token, instance_id="a", data_dir=tmp_path / "a", env=env)
        started.append((cp, a))
        await cp.wait_for(lambda: (link := link_of(cp, "a")) and leading(link), timeout=20)
        b = await spawn_agent(cp.url, cp.token, instance_id="b", data_dir=tmp_path / "b", env=env)
        started.append((cp, b))
        await cp.wait_for(lambda: link_of(cp, "b"), timeout=20)
        assert not leading(link_of(cp, "b"))
        return cp, a, b

    yield _start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for _cp, proc in started:
        await proc.stop()
        if failed:
            sys.stderr.write(f"--- agent {proc.instance_id}\n{proc.log()[-4000:]}\n")
    for cp in {id(cp): cp for cp, _ in started}.values():
        await cp.stop()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["file", "redis"])
async def test_kill_9_the_leader_and_the_follower_takes_over(contenders, backend):
    cp, a, b = await contenders(backend)
    killed_at = time.monotonic()
    a.signal(signal.SIGKILL)
    link_b = link_of(cp, "b")
    await cp.wait_for(lambda: leading(link_b), timeout=10)
    failover = time.monotonic() - killed_at
    print(f"\n{backend} failover after kill -9: {failover:.2f} s (LEASE_DURATION=3s RETRY_PERIOD=0.5s)")
    assert failover < (1.5 if backend == "file" else 3.0 + 0.5 + 1.0)
    cid = await link_b.command("stop_session", "s-any", {})
    assert (await cp.wait_result(cid)).ok  # the new leader acts


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["file", "redis"])
async def test_a_paused_leader_does_not_act_after_its_lease_expired(contenders, tmp_path, backend):
    """SIGSTOP: the follower takes over once the lease expires; the resumed process steps
    down (its mandate ran out first) and refuses the start it is sent on a stale route."""
    cp, a, b = await contenders(backend)
    link_a, link_b = link_of(cp, "a"), link_of(cp, "b")
    a.signal(signal.SIGSTOP)
    await cp.wait_for(lambda: leading(link_b), timeout=10)  # the lease expired; b took it
    demo = ["{python}", "-m", "agent_runtime.demo_app", "--port", "{port}", "--home", "{home}"]
    stale = await link_a.command("start_session", "s-stale", {"command": demo, "user": "alice"})  # a stale route
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
    assert (await cp.wait_result(taken)).ok  # the re-sent command runs on the real leader
    await link_b.command("stop_session", "s-stale", {})


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["file", "redis"])
async def test_sigterm_drains_and_hands_over_at_once(contenders, backend, tmp_path):
    """SIGTERM: the running command finishes and is reported, then the lease is released, so
    the follower takes over within a retry period instead of waiting for the lease to expire."""
    cp, a, b = await contenders(backend)
    link_a, link_b = link_of(cp, "a"), link_of(cp, "b")
    stubborn = (
        "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(120)"
    )
    start = await link_a.command("start_session", "s-drain", {"command": ["{python}", "-c", stubborn], "user": "alice"})
    assert (await cp.wait_result(start)).ok
    session_log = tmp_path / "a" / "local-backend" / "logs" / "s-drain.log"
    await until(lambda: session_log.exists() and "up" in session_log.read_text(), timeout=10)  # SIGTERM is ignored now
    sent = time.monotonic()
    hibernate = await link_a.command("hibernate_session", "s-drain")  # takes the 5 s terminate grace
    await cp.wait_for(lambda: any(f.type == "ack" and f.payload.command_id == hibernate for f in link_a.frames))
    a.signal(signal.SIGTERM)
    result = await cp.wait_result(hibernate, timeout=15)
    assert result.ok and result.data["state"] == "hibernated"
    assert time.monotonic() - sent > 4.5  # the agent waited out the 5 s terminate grace before exiting
    assert await asyncio.wait_for(a.proc.wait(), 15) == 0
    exited = time.monotonic()
    await cp.wait_for(lambda: leading(link_b), timeout=10)
    assert time.monotonic() - exited < 1.5  # well under LEASE_DURATION=3s: the lease was released
    assert any(f.type == "leader" and not f.payload.is_leader for f in link_a.frames)

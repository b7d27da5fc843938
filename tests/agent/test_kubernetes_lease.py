"""Lease election on ``coordination.k8s.io/v1`` against the API emulator: the lease in-process,
then two real agent processes (``--platform kubernetes``, ``HA_BACKEND=kubernetes``)."""

from __future__ import annotations

import asyncio
import secrets
import signal
import sys
import time
from datetime import datetime

import kubernetes
import pytest

from agent_runtime.config import ConfigError, LeaseConfig
from agent_runtime.leader import LeaderElector, make_elector
from agent_runtime.leader.kubernetes import KubernetesLease
from tests.support.fakes import FakeControlPlane, leading, link_of
from tests.support.kube_api import running_kube
from tests.support.processes import spawn_agent
from tests.support.waits import until

NS = "streamspace"
FAST = {"LEASE_DURATION": "3s", "RENEW_DEADLINE": "2s", "RETRY_PERIOD": "500ms"}


@pytest.fixture
def kube():
    yield from running_kube()


def lease_for(kube, tmp_path, identity: str, duration: float = 1.0) -> KubernetesLease:
    config = kube.write_kubeconfig(tmp_path / f"kubeconfig-{identity}")
    client = kubernetes.config.new_client_from_config(config_file=str(config))
    return KubernetesLease("leader", NS, identity=identity, lease_duration=duration, api_client=client)


def holder(kube) -> str | None:
    with kube.cond:
        try:
            return kube.get("leases", NS, "leader")["spec"].get("holderIdentity")
        except Exception:
            return None


# --- the lease, in-process ---------------------------------------------------------------------
async def test_one_holder_renewals_expiry_and_release(kube, tmp_path):
    a, b = lease_for(kube, tmp_path, "a"), lease_for(kube, tmp_path, "b")
    assert await a.try_acquire() and await a.try_acquire()  # idempotent for the holder
    assert not await b.try_acquire()
    assert holder(kube) == "a"
    lease = kube.get("leases", NS, "leader")
    assert lease["spec"]["leaseDurationSeconds"] == 1 and lease["spec"]["renewTime"]
    assert await a.renew() and not await b.renew()
    # a stops renewing: b, which last saw the record change just now, waits a full duration
    seen = time.monotonic()
    assert not await b.try_acquire()
    await until(b.try_acquire, timeout=5, interval=0.1)
    assert time.monotonic() - seen >= 0.9 and holder(kube) == "b"
    assert kube.get("leases", NS, "leader")["spec"]["leaseTransitions"] == 1
    assert not await a.renew()  # a lost it
    await b.release()
    assert holder(kube) is None
    assert await a.try_acquire()  # released: taken at once, no waiting for expiry
    await a.close()
    await b.close()


async def test_a_renew_conflict_loses_that_round_only(kube, tmp_path):
    a = lease_for(kube, tmp_path, "a", duration=15)
    assert await a.try_acquire()
    kube.fail_once("PUT", "leases", "leader", status=409)
    assert not await a.renew()  # the 409 of a concurrent write: no exception, not renewed
    assert a.conflicts == 1
    assert await a.renew()  # the next round re-reads the version and renews
    await a.close()


async def test_a_stale_resource_version_is_refused_by_the_server(kube, tmp_path):
    a, b = lease_for(kube, tmp_path, "a"), lease_for(kube, tmp_path, "b")
    assert await a.try_acquire()
    stale = kube.get("leases", NS, "leader")
    assert await a.renew()  # bumps the version
    assert not b._write(stale, b._spec(stale, taking=True))  # a takeover from an old read fails
    assert holder(kube) == "a" and b.conflicts == 1
    await a.close()
    await b.close()


async def test_elector_over_the_kubernetes_lease_steps_down_when_the_api_is_gone(kube, tmp_path):
    config = LeaseConfig(enabled=True, backend="kubernetes", lease_duration=1.5, renew_deadline=1.0, retry_period=0.2)
    elector = LeaderElector(lease_for(kube, tmp_path, "a", duration=1.5), config, identity="a")
    task = asyncio.create_task(elector.run())
    await until(lambda: elector.is_leader, timeout=5)
    kube.stop()  # the API server disappears: renewals fail
    lost = time.monotonic()
    await until(lambda: not elector.is_leader, timeout=5)
    assert time.monotonic() - lost <= 1.3  # within RENEW_DEADLINE (+ one retry period)
    task.cancel()


def test_config_defaults_and_validation(kube, tmp_path, monkeypatch):
    config = LeaseConfig.from_env("kubernetes", tmp_path, {"ENABLE_HA": "true", "HA_BACKEND": "kubernetes"})
    assert (config.lease_key, config.lease_namespace) == ("k8s-agent-leader", "streamspace")
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (15.0, 10.0, 2.0)
    env = {"HA_BACKEND": "kubernetes", "STREAMSPACE_KUBERNETES_NAMESPACE": "sessions"}
    assert LeaseConfig.from_env("kubernetes", tmp_path, env).lease_namespace == "sessions"
    env["LEASE_NAMESPACE"] = "leases"
    assert LeaseConfig.from_env("kubernetes", tmp_path, env).lease_namespace == "leases"
    with pytest.raises(ConfigError, match="RENEW_DEADLINE"):
        LeaseConfig.from_env("kubernetes", tmp_path, {"HA_BACKEND": "kubernetes", "RENEW_DEADLINE": "20s"})
    monkeypatch.setenv("KUBECONFIG", str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
    assert isinstance(make_elector(config, identity="x"), LeaderElector)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="cannot reach Kubernetes"):
        make_elector(config, identity="x")  # the agent exits at start-up with the reason


# --- two real agent processes ---------------------------------------------------------------------
@pytest.fixture
async def contenders(kube, tmp_path, request):
    cp = FakeControlPlane(heartbeat_interval_s=0.5)
    await cp.start()
    env = {
        "ENABLE_HA": "true",
        "HA_BACKEND": "kubernetes",
        "LEASE_KEY": f"test-{secrets.token_hex(4)}",
        "KUBECONFIG": str(kube.write_kubeconfig(tmp_path / "kubeconfig")),
        "STREAMSPACE_KUBERNETES_NAMESPACE": NS,
        **FAST,
    }
    procs = []
    try:  # start-up on a loaded machine: importing the kubernetes client alone takes seconds
        a = await spawn_agent(
            cp.url, cp.token, instance_id="a", data_dir=tmp_path / "a", platform="kubernetes", env=env
        )
        procs.append(a)
        await cp.wait_for(lambda: (link := link_of(cp, "a")) and leading(link), timeout=60)
        b = await spawn_agent(
            cp.url, cp.token, instance_id="b", data_dir=tmp_path / "b", platform="kubernetes", env=env
        )
        procs.append(b)
        await cp.wait_for(lambda: link_of(cp, "b"), timeout=60)
    except TimeoutError:
        for proc in procs:
            await proc.stop()
            sys.stderr.write(f"--- agent {proc.instance_id}\n{proc.log()[-4000:]}\n")
        await cp.stop()
        raise
    assert not leading(link_of(cp, "b"))
    yield cp, a, b, env["LEASE_KEY"]
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for proc in procs:
        proc.signal(signal.SIGCONT)
        await proc.stop()
        if failed:
            sys.stderr.write(f"--- agent {proc.instance_id}\n{proc.log()[-4000:]}\n")
    await cp.stop()


def lease_writes(kube, key: str) -> list[tuple[float, str]]:
    """(renewTime, holder) of every version of the Lease the API server stored."""
    with kube.cond:
        writes = []
        for _, resource, _, kind, obj in kube.events:
            if resource == "leases" and obj["metadata"]["name"] == key and kind != "DELETED":
                spec = obj["spec"]
                stamp = datetime.fromisoformat(spec["renewTime"].replace("Z", "+00:00")).timestamp()
                writes.append((stamp, spec.get("holderIdentity") or ""))
        return writes


@pytest.mark.slow
async def test_kill_9_the_leader_and_the_follower_takes_over(kube, contenders):
    cp, a, b, key = contenders
    link_a = link_of(cp, "a")
    kube.fail_once("PUT", "leases", key, status=409)  # one renewal of a's meets a conflict
    await until(lambda: not kube.faults, timeout=5)
    await asyncio.sleep(1.0)
    assert leading(link_a) and not leading(link_of(cp, "b"))  # the next round renewed: no flap
    assert not any(f.type == "leader" and not f.payload.is_leader for f in link_a.frames)
    killed = time.monotonic()
    a.signal(signal.SIGKILL)
    link_b = link_of(cp, "b")
    await cp.wait_for(lambda: leading(link_b), timeout=15)
    failover = time.monotonic() - killed
    assert failover < 3.0 + 0.5 + 1.5  # LEASE_DURATION + RETRY_PERIOD + the heartbeat that says so
    cid = await link_b.command("stop_session", "00000000-0000-0000-0000-000000000001", {})
    assert (await cp.wait_result(cid)).ok  # the new leader acts


@pytest.mark.slow
async def test_a_paused_leader_stops_acting_before_its_lease_can_be_taken(kube, contenders):
    cp, a, b, key = contenders
    link_a, link_b = link_of(cp, "a"), link_of(cp, "b")
    a.signal(signal.SIGSTOP)
    await cp.wait_for(lambda: leading(link_b), timeout=15)
    writes = lease_writes(kube, key)
    last_a = max(t for t, h in writes if h == "a")
    first_b = min(t for t, h in writes if h == "b")
    # a's mandate ended RENEW_DEADLINE after its last renewal began, before b could take over
    assert last_a + 2.0 < first_b
    stale_session = "00000000-0000-0000-0000-00000000000a"
    stale = await link_a.command("start_session", stale_session, {"image": "x:1", "user": "alice"})
    frames_before = len(link_a.frames)
    a.signal(signal.SIGCONT)
    await cp.wait_for(
        lambda: any(f.type == "leader" and not f.payload.is_leader for f in link_a.frames[frames_before:])
    )
    await asyncio.sleep(1.0)  # give a every chance to (wrongly) act
    assert not [f for f in link_a.frames if f.type in ("ack", "result") and f.payload.command_id == stale]
    assert kube.list("deployments", NS) == []  # nothing was started by the deposed leader
    assert leading(link_b) and not leading(link_a)

"""The Kubernetes backend with the real ``kubernetes`` client against the API emulator
(tests/support/kube_api.py): objects, lifecycle, readiness from watches, failures."""

from __future__ import annotations

import base64
import uuid

import pytest

from agent_runtime.backends import kubernetes_client as kc
from agent_runtime.backends.base import BackendError, SessionSpec
from agent_runtime.backends.kubernetes import KubernetesBackend
from agent_runtime.backends.kubernetes_objects import home_claim_name
from agent_runtime.config import ConfigError
from tests.support.kube_api import running_kube
from tests.support.waits import until

NS = "ss-test"


class Recorder:
    def __init__(self):
        self.exits: list[tuple[str, int | None]] = []
        self.steps: list[tuple[str, str, str]] = []

    async def step(self, session_id, step, label, state):
        self.steps.append((session_id, step, state))

    def exited(self, session_id, exit_code):
        self.exits.append((session_id, exit_code))

    def leading(self) -> bool:
        return True


@pytest.fixture
def kube():
    yield from running_kube()


@pytest.fixture
async def backend(kube, tmp_path):
    options = {
        "kubeconfig": str(kube.write_kubeconfig(tmp_path / "kubeconfig")),
        "namespace": NS,
        "endpoint": "cluster-ip",
        "storage_class": "fast",
        "home_size": "5Gi",
        "image_pull_secrets": "regcred",
        "unschedulable_timeout": "1",
    }
    backend = KubernetesBackend(agent_id="k8s-test", data_dir=tmp_path, options=options)
    recorder = Recorder()
    backend.listen(recorder)
    backend.recorder = recorder
    yield backend
    await backend.close()


def spec(**overrides) -> SessionSpec:
    base = {"image": "streamspace/firefox:1", "user": "alice", "template": "firefox", "cpu_millicores": 500,
            "memory_mb": 512, "streaming_port": 8080, "env": {"A": "1"}}  # fmt: skip
    return SessionSpec.parse({**base, **overrides})


def only_pod(kube, sid):
    pods = kube.pods_of(NS, sid)
    assert len(pods) == 1, pods
    return pods[0]["metadata"]["name"]


async def test_launch_ready_hibernate_wake_stop(kube, backend):
    sid = str(uuid.uuid4())
    item = await backend.start(sid, spec())
    assert item.state == "running" and not item.streaming_ready
    name = f"ss-{sid}"
    deployment = kube.get("deployments", NS, name)
    assert deployment["spec"]["replicas"] == 1
    assert kube.get("services", NS, name)["spec"]["type"] == "ClusterIP"
    assert (
        kube.get("networkpolicies", NS, name)["spec"]["podSelector"]["matchLabels"]["streamspace.io/session-id"] == sid
    )
    claim = kube.get("persistentvolumeclaims", NS, home_claim_name("alice"))
    assert claim["spec"]["storageClassName"] == "fast" and claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    pod_spec = deployment["spec"]["template"]["spec"]
    assert pod_spec["imagePullSecrets"] == [{"name": "regcred"}]

    pod = only_pod(kube, sid)
    kube.set_pod(NS, pod, "running")  # started, readiness probe not passing yet
    await until(lambda: backend._informers["pods"].get(pod)["status"]["phase"] == "Running")
    assert not (await backend.status(sid)).streaming_ready
    before = len(kube.requests)
    kube.set_pod(NS, pod, "ready")
    await until(lambda: backend._informers["pods"].get(pod)["status"]["conditions"][1]["status"] == "True")
    ready = await backend.status(sid)
    assert ready.streaming_ready and ready.endpoint == "127.0.0.1:8080"
    assert [i.session_id for i in await backend.inventory()] == [sid]
    assert len(kube.requests) - before <= 1  # status and inventory read the watch cache (one Service read at most)

    hibernated = await backend.hibernate(sid)
    assert hibernated.state == "hibernated"
    assert kube.get("deployments", NS, name)["spec"]["replicas"] == 0 and kube.pods_of(NS, sid) == []
    await until(lambda: backend._informers["deployments"].get(name)["spec"]["replicas"] == 0)
    assert (await backend.status(sid)).state == "hibernated"
    assert (await backend.hibernate(sid)).state == "hibernated"  # idempotent
    kube.get("persistentvolumeclaims", NS, home_claim_name("alice"))  # the home is kept

    woken = await backend.wake(sid, spec())
    assert woken.state == "running"
    assert kube.get("deployments", NS, name)["spec"]["replicas"] == 1
    kube.set_pod(NS, only_pod(kube, sid), "ready")
    await until(lambda: ready_now(backend, sid), timeout=5)

    stopped = await backend.stop(sid, spec())
    assert stopped.state == "stopped"
    for resource in ("deployments", "services", "networkpolicies"):
        assert not kube.list(resource, NS), resource
    assert kube.pods_of(NS, sid) == []
    kube.get("persistentvolumeclaims", NS, home_claim_name("alice"))  # kept unless asked
    await until(lambda: not backend._informers["deployments"].snapshot())
    assert (await backend.status(sid)).state == "stopped"
    assert (await backend.stop(sid, spec())).state == "stopped"  # idempotent
    await backend.stop(sid, spec(delete_home=True))
    assert not kube.list("persistentvolumeclaims", NS)


async def ready_now(backend, sid) -> bool:
    return (await backend.status(sid)).streaming_ready


async def test_a_pod_that_never_becomes_ready_stays_running_not_ready(kube, backend):
    sid = str(uuid.uuid4())
    await backend.start(sid, spec())
    pod = only_pod(kube, sid)
    kube.set_pod(NS, pod, "running")
    await until(lambda: backend._informers["pods"].get(pod)["status"]["phase"] == "Running")
    item = await backend.status(sid)
    assert item.state == "running" and not item.streaming_ready
    assert backend.recorder.exits == []  # not ready is not dead: the agent's ready timeout decides


async def test_image_pull_backoff_fails_with_an_actionable_reason(kube, backend):
    sid = str(uuid.uuid4())
    await backend.start(sid, spec(image="registry.example/nope:1"))
    pod = only_pod(kube, sid)
    kube.set_pod(
        NS, pod, "waiting", reason="ImagePullBackOff", message='Back-off pulling image "registry.example/nope:1"'
    )
    await until(lambda: (sid, None) in backend.recorder.exits, timeout=5, what="the watch reports the failure")
    assert (await backend.status(sid)).state == "failed"
    info = await backend.exit_info(sid)
    assert "ImagePullBackOff" in info.description and "registry.example/nope:1" in info.description
    assert "imagePullSecrets" in info.description


async def test_crash_loop_reports_exit_code_and_log(kube, backend):
    sid = str(uuid.uuid4())
    await backend.start(sid, spec())
    pod = only_pod(kube, sid)
    kube.logs[pod] = "starting\npanic: no display\n"
    kube.set_pod(NS, pod, "waiting", reason="CrashLoopBackOff", message="back-off 40s restarting", exit_code=3)
    await until(lambda: (sid, 3) in backend.recorder.exits, timeout=5)
    info = await backend.exit_info(sid)
    assert info.exit_code == 3 and "CrashLoopBackOff" in info.description
    assert "panic: no display" in info.log_tail


async def test_unschedulable_fails_after_the_bound(kube, backend):
    sid = str(uuid.uuid4())
    await backend.start(sid, spec(gpu=1))
    pod = only_pod(kube, sid)
    assert kube.pods_of(NS, sid)[0]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    kube.set_pod(NS, pod, "unschedulable", message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    await until(lambda: sid in [s for s, _ in backend.recorder.exits], timeout=5, what="the bound's timer")
    assert (await backend.status(sid)).state == "failed"
    info = await backend.exit_info(sid)
    assert "Insufficient nvidia.com/gpu" in info.description and "Lower the session's" in info.description


async def test_second_session_reuses_the_home_pvc(kube, backend):
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    await backend.start(first, spec())
    await backend.stop(first, spec())
    claim = kube.get("persistentvolumeclaims", NS, home_claim_name("alice"))
    await backend.start(second, spec())
    assert (
        kube.get("persistentvolumeclaims", NS, home_claim_name("alice"))["metadata"]["uid"] == claim["metadata"]["uid"]
    )
    assert len(kube.list("persistentvolumeclaims", NS)) == 1
    volumes = kube.get("deployments", NS, f"ss-{second}")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "home", "persistentVolumeClaim": {"claimName": home_claim_name("alice")}} in volumes
    await backend.start(str(uuid.uuid4()), spec(user="bob"))
    assert len(kube.list("persistentvolumeclaims", NS)) == 2  # one per user


async def test_stream_secrets_reach_the_pod_from_a_secret(kube, backend):
    sid = str(uuid.uuid4())
    s = spec(stream_secret="full-secret", stream_view_secret="view-secret")
    await backend.start(sid, s)
    secret = kube.get("secrets", NS, f"ss-{sid}")
    assert base64.b64decode(secret["data"]["STREAMSPACE_STREAM_SECRET"]).decode() == "full-secret"
    env = kube.get("deployments", NS, f"ss-{sid}")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "STREAMSPACE_STREAM_SECRET",
            "valueFrom": {"secretKeyRef": {"name": f"ss-{sid}", "key": "STREAMSPACE_STREAM_SECRET"}}} in env  # fmt: skip
    assert "full-secret" not in str(env)
    await backend.stop(sid, s)
    assert not kube.list("secrets", NS)


async def test_restart_finds_its_sessions_by_label(kube, backend, tmp_path):
    sid = str(uuid.uuid4())
    await backend.start(sid, spec())
    kube.set_pod(NS, only_pod(kube, sid), "ready")
    again = KubernetesBackend(agent_id="k8s-test", data_dir=tmp_path, options=backend.options)
    other = KubernetesBackend(agent_id="someone-else", data_dir=tmp_path, options=backend.options)
    try:
        (item,) = await again.inventory()
        assert item.session_id == sid and item.state == "running" and item.streaming_ready
        assert await other.inventory() == []  # another agent's sessions are not ours
    finally:
        await again.close()
        await other.close()


async def test_hibernating_a_missing_session_and_api_errors_are_clear(kube, backend):
    with pytest.raises(BackendError, match="has no Deployment"):
        await backend.hibernate(str(uuid.uuid4()))
    with pytest.raises(BackendError, match="cannot name a Kubernetes object"):
        await backend.start("Not_Valid", spec())
    kube.fail_once("POST", "deployments", None, status=500)
    with pytest.raises(BackendError, match="creating the Deployment failed"):
        await backend.start(str(uuid.uuid4()), spec())


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(BackendError, match="home_size"):
        KubernetesBackend(agent_id="a", data_dir=tmp_path, options={"home_size": "lots"})
    with pytest.raises(BackendError, match="endpoint"):
        KubernetesBackend(agent_id="a", data_dir=tmp_path, options={"endpoint": "nodeport"})


def test_where_the_client_config_comes_from(kube, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")  # in a pod, but no service account token here
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ConfigError, match="in-cluster service account"):
        kc.api_client({})
    config = kube.write_kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(config))  # an explicit kubeconfig wins over in-cluster
    assert kc.api_client({}).configuration.host == kube.url


class Deposed(Recorder):
    """Leads until check number ``lost_at``; ``successor`` runs at that check (what the new
    leader did in the window before it)."""

    def __init__(self, lost_at: int, successor=lambda: None):
        super().__init__()
        self.lost_at, self.successor, self.checks = lost_at, successor, 0

    def leading(self) -> bool:
        self.checks += 1
        if self.checks == self.lost_at:
            self.successor()
        return self.checks < self.lost_at


async def test_a_deployment_created_after_the_mandate_ended_is_deleted(kube, backend):
    """Issue 17: the check right after the create finds the mandate gone; the Deployment that
    create made is deleted (by its uid) and the start answers not_leader."""
    from agent_runtime.backends.base import MandateLost

    sid = str(uuid.uuid4())
    backend.listen(deposed := Deposed(2))  # the check before the create, then the one after it
    with pytest.raises(MandateLost, match="^not_leader"):
        await backend.start(sid, spec())
    assert deposed.checks == 2
    with pytest.raises(Exception, match="not found"):
        kube.get("deployments", NS, f"ss-{sid}")


async def test_a_deployment_the_successor_recreated_is_kept(kube, backend):
    """Between this create and its check the successor deleted that Deployment and created its
    own under the same name: the delete's uid precondition fails, and the successor's stays."""
    from agent_runtime.backends.base import MandateLost

    sid = str(uuid.uuid4())
    name = f"ss-{sid}"
    replaced = []

    def recreate() -> None:
        with kube.cond:  # the emulator's storage, as its request handlers use it
            mine = kube.get("deployments", NS, name)
            kube.delete("deployments", NS, name)
            theirs = {key: value for key, value in mine.items() if key != "status"}
            theirs["metadata"] = {"name": name, "labels": mine["metadata"].get("labels") or {}}
            replaced.append(kube.create("deployments", NS, theirs)["metadata"]["uid"])

    backend.listen(Deposed(2, recreate))
    with pytest.raises(MandateLost, match="^not_leader"):
        await backend.start(sid, spec())
    assert kube.get("deployments", NS, name)["metadata"]["uid"] == replaced[0]

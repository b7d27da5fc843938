"""The Kubernetes backend and Lease election against a real cluster (kind, k3s, any other).

Runs only when ``KUBECONFIG`` names a cluster: no API server can be installed on the project's
machines or in CI, so without ``KUBECONFIG`` every test here is skipped, in CI too (this is
the one place where a missing service is a skip under ``CI=true``: CI never has a cluster;
the emulator-backed tests in test_kubernetes_backend.py and test_kubernetes_lease.py are
what CI runs). The README says how to run it:

    kind create cluster --name streamspace     # or: k3s, then KUBECONFIG=/etc/rancher/k3s/k3s.yaml
    KUBECONFIG=~/.kube/config .venv/bin/pytest -q tests/agent/test_kubernetes_cluster.py

It creates a namespace ``streamspace-test-<random>`` and deletes it at the end. The session
image is ``STREAMSPACE_K8S_TEST_IMAGE`` (default ``nginxinc/nginx-unprivileged:stable``: it
runs as non-root and answers HTTP on 8080, as the pod's securityContext and readiness probe
require).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
import uuid

import kubernetes
import pytest

from agent_runtime.backends import kubernetes_objects as objects
from agent_runtime.backends.base import SessionSpec
from agent_runtime.backends.homefiles import HomeNotAvailable, HomePathEscape, HomePathNotFound, HomeUploadIncomplete
from agent_runtime.backends.kubernetes import KubernetesBackend
from agent_runtime.leader.kubernetes import KubernetesLease

pytestmark = pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"), reason="needs a real cluster: set KUBECONFIG (kind or k3s, see README)"
)

IMAGE = os.environ.get("STREAMSPACE_K8S_TEST_IMAGE", "nginxinc/nginx-unprivileged:stable")


@pytest.fixture
def namespace():
    api = kubernetes.config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
    core = kubernetes.client.CoreV1Api(api)
    name = f"streamspace-test-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)
    api.close()


async def _until(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(1.0)
    raise TimeoutError


async def test_session_lifecycle_on_a_real_cluster(namespace, tmp_path):
    backend = KubernetesBackend(
        agent_id="cluster-test", data_dir=tmp_path, options={"namespace": namespace, "run_as_user": "101"}
    )
    spec = SessionSpec.parse({"image": IMAGE, "user": "alice", "streaming_port": 8080, "memory_mb": 128,
                              "cpu_millicores": 100, "home_mount_path": "/tmp/home"})  # fmt: skip
    sid = str(uuid.uuid4())
    try:
        assert (await backend.start(sid, spec)).state == "running"

        async def ready():
            return (await backend.status(sid)).streaming_ready

        await _until(ready, timeout=180)
        assert (await backend.status(sid)).endpoint == f"ss-{sid}.{namespace}.svc:8080"
        assert (await backend.hibernate(sid)).state == "hibernated"
        assert (await backend.wake(sid, spec)).state == "running"
        await _until(ready, timeout=180)
    finally:
        await backend.stop(sid, SessionSpec.parse({"user": "alice", "delete_home": True}))
        await backend.close()


async def _chunks(data: bytes, piece: int = 256 * 1024):
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


async def _read(backend: KubernetesBackend, sid: str, path: tuple[str, ...]) -> bytes:
    opened = await backend.home_read(sid, path)
    try:
        return b"".join([chunk async for chunk in opened.chunks()])
    finally:
        await opened.aclose()


async def test_files_in_the_home_on_a_real_cluster(namespace, tmp_path):
    """Files through the pod's exec on a real API server and kubelet: up- and download with the
    same SHA-256, a link out of the home refused, a short upload leaves nothing, the PVC's data
    back after hibernate and wake, 'not running' while hibernated."""
    backend = KubernetesBackend(
        agent_id="cluster-files", data_dir=tmp_path, options={"namespace": namespace, "run_as_user": "101"}
    )
    spec = SessionSpec.parse({"image": IMAGE, "user": "alice", "streaming_port": 8080, "memory_mb": 128,
                              "cpu_millicores": 100, "home_mount_path": "/tmp/home"})  # fmt: skip
    sid = str(uuid.uuid4())

    async def ready():
        return (await backend.status(sid)).streaming_ready

    try:
        await backend.start(sid, spec)
        await _until(ready, timeout=180)
        payload = os.urandom(5 * 1024 * 1024 + 7)
        entry = await backend.home_write(sid, ("up.bin",), len(payload), _chunks(payload))
        assert entry.size == len(payload)
        back = await _read(backend, sid, ("up.bin",))
        assert hashlib.sha256(back).hexdigest() == hashlib.sha256(payload).hexdigest()
        assert (await backend.home_stat(sid, ("up.bin",))).size == len(payload)

        pod = objects.running_pod(backend._pods_of(sid))["metadata"]["name"]
        made = await asyncio.to_thread(backend._open_exec, pod, ["sh", "-c", "ln -s /etc /tmp/home/etc-out"], False)
        await asyncio.to_thread(made.run_forever, 60)
        assert made.returncode == 0
        with pytest.raises(HomePathEscape):
            await backend.home_list(sid, ("etc-out",))
        with pytest.raises(HomePathEscape):
            await backend.home_read(sid, ("etc-out", "passwd"))
        with pytest.raises(HomeUploadIncomplete):
            await backend.home_write(sid, ("short.bin",), 100, _chunks(b"12345"))
        assert {e.name for e in await backend.home_list(sid, ())} >= {"up.bin", "etc-out"}
        assert not any(e.name.startswith(".ss-upload-") for e in await backend.home_list(sid, ()))

        await backend.hibernate(sid)

        async def no_pod():
            return not backend._pods_of(sid)

        await _until(no_pod, timeout=120)
        with pytest.raises(HomeNotAvailable):
            await backend.home_list(sid, ())
        await backend.wake(sid, spec)
        await _until(ready, timeout=180)
        assert await _read(backend, sid, ("up.bin",)) == payload  # the PVC outlived the pod
        await backend.home_delete(sid, ("up.bin",))
        with pytest.raises(HomePathNotFound):
            await backend.home_stat(sid, ("up.bin",))
    finally:
        await backend.stop(sid, SessionSpec.parse({"user": "alice", "delete_home": True}))
        await backend.close()


async def test_lease_on_a_real_cluster(namespace):
    a = KubernetesLease("k8s-agent-leader", namespace, identity="a", lease_duration=2)
    b = KubernetesLease("k8s-agent-leader", namespace, identity="b", lease_duration=2)
    assert await a.try_acquire() and not await b.try_acquire()
    assert await a.renew()
    await a.release()
    assert await b.try_acquire()
    await b.close()
    await a.close()

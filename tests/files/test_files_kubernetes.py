"""The files API on a Kubernetes session: daphne on the test's PostgreSQL database, a
``streamspace-agent --platform kubernetes`` process, the API emulator (tests/support/kube_api.py)
whose ``pods/exec`` runs the agent's commands as real processes over the home PVC's directory.

A 20 MiB upload and its download have the same SHA-256 and the file is in the PVC; a link out
of the home is refused; an upload over the limit is 413; a hibernated session answers 409 with
the hint, and the file is there again after the wake (the PVC outlives the pod).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rest_framework_simplejwt.tokens import RefreshToken

from agent_runtime.backends.kubernetes_objects import home_claim_name
from agents_app.models import Agent
from sessions_app.models import Session, Template
from tests.support.kube_api import KubeAPI, running_kube
from tests.support.stack import Stack, make_agent, running_stack, wait_for_other_connections_to_close
from tests.support.waits import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

NS = "streamspace-files"
MIB = 1024 * 1024
SIZE = 20 * MIB
LIMIT = 32 * MIB


@pytest.fixture
def kube() -> Iterator[KubeAPI]:
    yield from running_kube(auto_ready=True)


@pytest.fixture
def stack(request, tmp_path, settings, kube) -> Iterator[Stack]:
    yield from running_stack(
        request,
        tmp_path,
        SECRET_KEY=settings.SECRET_KEY,
        KUBECONFIG=str(kube.write_kubeconfig(tmp_path / "kubeconfig")),
        STREAMSPACE_KUBERNETES_NAMESPACE=NS,
        STREAMSPACE_UPLOAD_MAX_BYTES=str(LIMIT),
    )
    wait_for_other_connections_to_close()


def payload_chunks(size: int) -> Iterator[bytes]:
    block = hashlib.sha256(b"files over kubernetes").digest() * (MIB // 32)
    for index in range(size // MIB):
        yield bytes([index % 256]) + block[1:]


def announce_upload(stack: Stack, access: str, path: str, size: int) -> bytes:
    """The status line the server answers to a PUT's head alone (the body is never sent)."""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as sock:
        sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {access}\r\n"
                     f"Content-Length: {size}\r\n\r\n".encode())  # fmt: skip
        return sock.makefile("rb").readline()


def _state(session_id: str) -> str:
    return Session.objects.values_list("state", flat=True).get(pk=session_id)


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory outside the home that the pod's user can reach (so only the rule refuses)."""
    path = Path(tempfile.mkdtemp(prefix="k8s-files-api-outside-", dir="/tmp"))
    path.chmod(0o755)
    (path / "secret.txt").write_text("secret\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_files_api_on_a_kubernetes_session(stack, kube, alice, outside):
    agent, token = make_agent("k8s-files", "kubernetes")
    Template.objects.create(slug="k8s-files", display_name="K8s files", image="streamspace/test-app:1",
                            platform="kubernetes", default_cpu_millicores=250, default_memory_mb=128)  # fmt: skip
    stack.start_agent(agent, token, "k8s-files-1", endpoint="cluster-ip")
    access = str(RefreshToken.for_user(alice).access_token)
    api = httpx.Client(base_url=stack.base, timeout=120, headers={"Authorization": f"Bearer {access}"})
    wait_until(lambda: Agent.objects.get(pk=agent.pk).instances.filter(is_leader=True, connected=True).exists())
    launched = api.post("/api/v1/sessions", json={"template": "k8s-files", "persistent_home": True})
    assert launched.status_code == 202, launched.text
    sid = launched.json()["id"]
    wait_until(lambda: _state(sid) == "running", timeout=30, what="running")
    home = kube.volumes.claim_dir(NS, home_claim_name("alice"))
    (home / "link-out").symlink_to(outside / "secret.txt")
    (home / "docs").mkdir()
    for entry in ("link-out", "docs"):
        os.lchown(home / entry, 1000, 1000)  # the user's own, as they would be
    base = f"/api/v1/sessions/{sid}/files"

    expected = hashlib.sha256()
    for chunk in payload_chunks(SIZE):
        expected.update(chunk)
    put = api.put(f"{base}/docs/big.bin", content=payload_chunks(SIZE), headers={"Content-Length": str(SIZE)})
    assert put.status_code == 201, put.text
    assert put.json()["size"] == SIZE
    assert (home / "docs" / "big.bin").stat().st_size == SIZE  # in the PVC, not anywhere else
    got, received = hashlib.sha256(), 0
    with api.stream("GET", f"{base}/docs/big.bin") as response:
        assert response.status_code == 200
        assert int(response.headers["content-length"]) == SIZE
        for chunk in response.iter_raw():
            got.update(chunk)
            received += len(chunk)
    assert (received, got.hexdigest()) == (SIZE, expected.hexdigest())

    listing = api.get(f"{base}/").json()
    assert {e["name"]: e["type"] for e in listing["entries"]} == {"docs": "directory", "link-out": "link"}
    refused = api.get(f"{base}/link-out")
    assert (refused.status_code, refused.json()["code"]) == (403, "path_outside_home")
    assert api.get(f"{base}/%2e%2e/etc/passwd").status_code == 400
    assert api.get(f"{base}/missing").status_code == 404
    assert announce_upload(stack, access, f"{base}/docs/huge.bin", LIMIT + 1).startswith(b"HTTP/1.1 413 ")
    assert not (home / "docs" / "huge.bin").exists()
    conflict = api.put(f"{base}/docs", content=b"x")
    assert (conflict.status_code, conflict.json()["code"]) == (409, "conflict")

    assert api.post(f"/api/v1/sessions/{sid}/hibernate").status_code in (200, 202)
    wait_until(lambda: _state(sid) == "hibernated", timeout=30, what="hibernated")
    asleep = api.get(f"{base}/docs/")
    assert (asleep.status_code, asleep.json()["code"], asleep.json()["state"]) == (409, "session_not_running",
                                                                                  "hibernated")  # fmt: skip
    assert "wake" in asleep.json()["detail"]
    assert api.post(f"/api/v1/sessions/{sid}/wake").status_code in (200, 202)
    wait_until(lambda: _state(sid) == "running", timeout=30, what="running again")
    again = api.get(f"{base}/docs/")
    assert again.status_code == 200, again.text
    assert [(e["name"], e["size"]) for e in again.json()["entries"]] == [("big.bin", SIZE)]
    assert api.delete(f"{base}/docs").status_code == 204
    assert not (home / "docs").exists() and (outside / "secret.txt").exists()
    api.close()

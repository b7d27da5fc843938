"""The files API on a Docker session: daphne, a real Docker agent process, the test image.

A 50 MiB upload and its download have the same SHA-256; links in the container's home that
point out of it are refused; bad paths and a PUT to a directory are refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from sessions_app.models import Session, SessionState, Template
from streamspace.accounts.models import TokenScope
from streamspace.accounts.tokens import create_token
from tests.support.browser import make_person
from tests.support.docker import TEST_IMAGE
from tests.support.stack import make_agent
from tests.support.waits import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

MIB = 1024 * 1024
SIZE = 50 * MIB


def payload_chunks(size: int) -> Iterator[bytes]:
    block = hashlib.sha256(b"files over docker").digest() * (MIB // 32)
    for index in range(size // MIB):
        yield bytes([index % 256]) + block[1:]


def test_files_api_on_a_docker_session(stack, docker_client, docker_agent_id):
    alice = make_person("alice")
    agent, token = make_agent(docker_agent_id, "docker")
    Template.objects.create(slug="test-image", display_name="Test image", platform="docker", image=TEST_IMAGE,
                            default_cpu_millicores=250, default_memory_mb=128)  # fmt: skip
    stack.start_agent(agent, token, f"{docker_agent_id}-a", pull="never", stop_timeout="2")
    wait_until(lambda: agent.instances.filter(connected=True, is_leader=True).exists(), what="leader")
    _, key = create_token(alice, name="files-docker", scope=TokenScope.WRITE)
    api = httpx.Client(base_url=stack.base, timeout=120, headers={"Authorization": f"Token {key}"})
    launched = api.post("/api/v1/sessions", json={"template": "test-image", "persistent_home": False})
    assert launched.status_code == 202, launched.text
    session_id = launched.json()["id"]
    wait_until(lambda: Session.objects.get(pk=session_id).state == SessionState.RUNNING, timeout=60, what="running")
    container = docker_client.containers.get(f"streamspace-{session_id}")
    code, output = container.exec_run(
        ["sh", "-c", "mkdir -p /home/user/docs /outside && echo secret > /outside/secret.txt && "
         "busybox ln -s /outside /home/user/dir-out && busybox ln -s /outside/secret.txt /home/user/link-out"]
    )  # fmt: skip
    assert code == 0, output
    base = f"/api/v1/sessions/{session_id}/files"

    expected = hashlib.sha256()
    for chunk in payload_chunks(SIZE):
        expected.update(chunk)
    put = api.put(f"{base}/docs/big.bin", content=payload_chunks(SIZE), headers={"Content-Length": str(SIZE)})
    assert put.status_code == 201, put.text
    assert put.json()["size"] == SIZE
    got, received = hashlib.sha256(), 0
    with api.stream("GET", f"{base}/docs/big.bin") as response:
        assert response.status_code == 200
        assert response.headers["content-disposition"].startswith('attachment; filename="big.bin"')
        assert int(response.headers["content-length"]) == SIZE
        for chunk in response.iter_raw():
            got.update(chunk)
            received += len(chunk)
    assert (received, got.hexdigest()) == (SIZE, expected.hexdigest())
    code, output = container.exec_run(["sh", "-c", "stat -c %s /home/user/docs/big.bin"])
    assert output.strip() == str(SIZE).encode()

    listing = api.get(f"{base}/").json()
    assert {e["name"]: e["type"] for e in listing["entries"]} == {"docs": "directory", "dir-out": "link",
                                                                  "link-out": "link"}  # fmt: skip
    for path in ("link-out", "dir-out/secret.txt", "dir-out/"):
        refused = api.get(f"{base}/{path}")
        assert (refused.status_code, refused.json()["code"]) == (403, "path_outside_home"), path
    assert api.put(f"{base}/dir-out/planted", content=b"x").status_code == 403
    assert api.get(f"{base}/%2e%2e/etc/passwd").status_code == 400
    assert api.get(f"{base}/missing").status_code == 404
    conflict = api.put(f"{base}/docs", content=b"x")
    assert (conflict.status_code, conflict.json()["code"]) == (409, "conflict")
    assert api.delete(f"{base}/docs").status_code == 204
    assert api.get(f"{base}/docs/big.bin").status_code == 404
    code, _ = container.exec_run(["sh", "-c", "test -f /outside/secret.txt && test ! -e /outside/planted"])
    assert code == 0

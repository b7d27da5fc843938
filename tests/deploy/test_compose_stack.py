"""deploy/docker-compose.yml brought up for real (tests/deploy/compose_stack.py): PostgreSQL,
Redis, two control planes behind nginx, Celery and two agent replicas, with images built on this
machine. A user launches a session through nginx; the session reaches ``streaming_ready`` with
nothing published on the host, its page and a WebSocket echo come back through nginx and the
proxy (the agent's tunnel), and from inside the session container PostgreSQL, Redis and the
control planes cannot be reached.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from websockets.sync.client import connect as ws_connect

from tests.deploy.compose_stack import HERE, Stack, compose_stack, project_name, signed_in
from tests.support.waits import wait_until

# A cold run builds the images first (tests/deploy/compose_images.sh, several minutes once);
# a warm one spends most of its time in `up` (migrations, the control planes' start).
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1800)]

# Exit 0 when a TCP connection to $1:$2 opens within 3 s, 1 when refused or timed out.
CONNECTS = 'timeout 4 nc -w 3 "$1" "$2" </dev/null; rc=$?; [ $rc = 0 ] || [ $rc -ge 124 ]'


@pytest.fixture(scope="module")
def stack(request, docker_client, tmp_path_factory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("compose")
    with compose_stack(request, docker_client, workdir, project_name("stream"), [HERE / "stack-override.yml"]) as stack:
        yield stack


def connects(container, host: str, port: int) -> bool:
    code, _ = container.exec_run(["sh", "-c", CONNECTS, "connects", host, str(port)])
    return code == 0


def address(container, network_suffix: str) -> str:
    networks = container.attrs["NetworkSettings"]["Networks"]
    (name,) = [name for name in networks if name.endswith(network_suffix)]
    return networks[name]["IPAddress"]


def test_a_session_launched_through_nginx_streams(stack, docker_client):
    with signed_in(stack) as user:
        session_id = user.launch()
        page = user.get(f"/api/v1/http/{session_id}/")
        assert page.status_code == 200 and b"streamspace test session" in page.content

        ws_url = f"ws://127.0.0.1:{stack.port}/api/v1/http/{session_id}/"
        with ws_connect(ws_url, additional_headers=user.bearer, open_timeout=20) as ws:
            ws.send("hello through nginx")
            assert ws.recv(timeout=10).strip() == "hello through nginx"

        session = docker_client.containers.get(f"streamspace-{session_id}")
        assert list(session.attrs["NetworkSettings"]["Networks"]) == [f"streamspace-session-{session_id}"]
        assert not session.attrs["HostConfig"]["PortBindings"]
        own = address(session, session_id)
        assert connects(session, own, 8080)  # the probe works inside this container
        for service, port in (("postgres", 5432), ("redis", 6379), ("control-plane-1", 8000)):
            target = address(stack.container(docker_client, service), "_backend")
            assert not connects(session, target, port), f"a session reached {service}"
            assert not connects(session, service, port), f"a session reached {service} by name"
        user.stop(session_id)
    wait_until(
        lambda: not docker_client.networks.list(names=[f"streamspace-session-{session_id}"]),
        timeout=60,
        what="the session's network to go",
    )

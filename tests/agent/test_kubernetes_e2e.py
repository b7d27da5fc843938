"""The Kubernetes agent end to end: daphne on the test's PostgreSQL database, a
``streamspace-agent --platform kubernetes`` process talking to the API emulator
(tests/support/kube_api.py), sessions launched, hibernated, woken and stopped through the API,
and the session proxy reaching the session's Service through the agent's tunnel.

No cluster network exists here, so the emulator plays the kubelet (pods turn Ready at once)
and hands every Service the ClusterIP 127.0.0.1; the agent runs with ``endpoint=cluster-ip``
(the setting for agents outside the cluster) and the template's streaming port is a real HTTP
server the test runs: what answers through the proxy is what the agent dialled at the
Service's address.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx
import pytest
from rest_framework_simplejwt.tokens import RefreshToken

from agents_app.models import Agent
from sessions_app.models import Session, Template
from tests.support.kube_api import KubeAPI, running_kube
from tests.support.stack import (
    Stack,
    make_agent,
    running_stack,
    wait_for_other_connections_to_close,
)
from tests.support.waits import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

NS = "streamspace-e2e"


class _Pod(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from the pod: {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        return None


@pytest.fixture
def pod_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pod)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


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
    )
    wait_for_other_connections_to_close()


def _state(session_id: str) -> dict:
    return Session.objects.values("state", "streaming_ready", "endpoint").get(pk=session_id)


def test_launch_proxy_hibernate_wake_stop_through_the_control_plane(stack, kube, pod_server, alice):
    agent, token = make_agent("k8s-e2e", "kubernetes")
    Agent.objects.filter(pk=agent.pk).update(proxy_mode="tunnel")  # the Service is not reachable from here
    Template.objects.create(
        slug="k8s-app", display_name="K8s app", image="streamspace/test-app:1", platform="kubernetes",
        streaming_port=pod_server, default_cpu_millicores=250, default_memory_mb=128,
    )  # fmt: skip
    stack.start_agent(agent, token, "k8s-1", endpoint="cluster-ip")
    access = str(RefreshToken.for_user(alice).access_token)
    with httpx.Client(base_url=stack.base, headers={"Authorization": f"Bearer {access}"}, timeout=20) as api:
        wait_until(lambda: Agent.objects.get(pk=agent.pk).instances.filter(is_leader=True, connected=True).exists())
        response = api.post("/api/v1/sessions", json={"template": "k8s-app", "persistent_home": True})
        assert response.status_code == 202, response.text
        sid = response.json()["id"]
        wait_until(lambda: _state(sid)["streaming_ready"], timeout=30)
        # The agent's endpoint is a loopback address, which the control plane refuses from a
        # non-local agent: the proxy can only use the tunnel (the agent dials the endpoint).
        assert _state(sid) == {"state": "running", "streaming_ready": True, "endpoint": ""}
        deployment = kube.get("deployments", NS, f"ss-{sid}")
        assert deployment["metadata"]["labels"]["streamspace.io/session-id"] == sid
        assert kube.list("persistentvolumeclaims", NS)[0]["metadata"]["annotations"]["streamspace.io/user"] == "alice"

        # the browser's way in: the viewer URL on the session's origin, through the tunnel
        url = urlsplit(api.get(f"/api/v1/sessions/{sid}/viewer-url").json()["url"])
        with httpx.Client(base_url=stack.base, headers={"Host": url.netloc}, timeout=20) as browser:
            page = browser.get(f"/?{url.query}", follow_redirects=True)
            assert page.status_code == 200, page.text
            assert page.text.startswith("hello from the pod: /")

        assert api.post(f"/api/v1/sessions/{sid}/hibernate").status_code in (200, 202)
        wait_until(lambda: _state(sid)["state"] == "hibernated", timeout=30)
        assert kube.get("deployments", NS, f"ss-{sid}")["spec"]["replicas"] == 0 and kube.pods_of(NS, sid) == []

        assert api.post(f"/api/v1/sessions/{sid}/wake").status_code in (200, 202)
        wait_until(lambda: _state(sid)["state"] == "running" and _state(sid)["streaming_ready"], timeout=30)
        assert kube.get("deployments", NS, f"ss-{sid}")["spec"]["replicas"] == 1

        assert api.delete(f"/api/v1/sessions/{sid}").status_code in (200, 202, 204)
        wait_until(lambda: _state(sid)["state"] == "stopped", timeout=30)
        assert kube.list("deployments", NS) == [] and kube.list("services", NS) == []
        assert len(kube.list("persistentvolumeclaims", NS)) == 1  # the home is kept


def test_an_image_that_cannot_be_pulled_fails_the_session_with_the_reason(stack, kube, alice):
    kube.auto_ready = False

    def pull_fails(pod: dict) -> None:  # the kubelet's verdict on this node
        kube.set_pod(NS, pod["metadata"]["name"], "waiting", reason="ImagePullBackOff",
                     message='Back-off pulling image "registry.example/missing:1"')  # fmt: skip

    kube.on_pod_created = pull_fails
    agent, token = make_agent("k8s-e2e-fail", "kubernetes")
    Template.objects.create(slug="k8s-missing", display_name="Missing image", image="registry.example/missing:1",
                            platform="kubernetes", default_cpu_millicores=250, default_memory_mb=128)  # fmt: skip
    stack.start_agent(agent, token, "k8s-f", endpoint="cluster-ip")
    access = str(RefreshToken.for_user(alice).access_token)
    with httpx.Client(base_url=stack.base, headers={"Authorization": f"Bearer {access}"}, timeout=20) as api:
        wait_until(lambda: Agent.objects.get(pk=agent.pk).instances.filter(is_leader=True, connected=True).exists())
        response = api.post("/api/v1/sessions", json={"template": "k8s-missing", "persistent_home": False})
        assert response.status_code == 202, response.text
        sid = response.json()["id"]
        wait_until(lambda: _state(sid)["state"] == "failed", timeout=30)
        body = api.get(f"/api/v1/sessions/{sid}").json()
        assert "ImagePullBackOff" in body["status_message"] and "registry.example/missing:1" in body["status_message"]
        assert "imagePullSecrets" in body["status_message"]  # what the user can do about it

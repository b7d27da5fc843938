"""A small Kubernetes API server for tests: the real ``kubernetes`` client talks to it over HTTP.

Why not kmock (PyPI, by the Kopf author): its emulator keeps objects as merged dicts with a
fixed ``resourceVersion`` of ``"..."``, no optimistic concurrency, label selectors, watch
resumption from a version or scale subresource; the backend and the Lease election depend on
exactly those. This one implements, with the API server's semantics:

* create (``409 AlreadyExists``), get, list with ``labelSelector`` (equality terms), replace
  (``409 Conflict`` on a stale ``metadata.resourceVersion``), merge patch, delete (404; ``409
  Conflict`` when the body's ``preconditions.uid`` is not the object's);
* one cluster-wide ``resourceVersion`` counter; watches (``?watch=true``) replay every event
  after the given version, then stream new ones until ``timeoutSeconds``; a version older
  than the retained history answers an ``ERROR`` event with code 410, as etcd compaction does;
* the ``scale`` subresource of Deployments; pod logs (``/log``, text set by the test);
* ``pods/exec`` over WebSocket (``v4.channel.k8s.io``), the command a real process whose
  volume mounts are the emulator's per-claim directories (tests/support/kube_exec.py);
* the controllers a test needs: a Deployment keeps ``spec.replicas`` pods (created from its
  template, deleted when scaled down or when the Deployment goes); a Service gets a
  ``clusterIP`` (``cluster_ip``, loopback by default so tests can dial it).

Pods move through phases only when the test says so (:meth:`KubeAPI.set_pod`), or at once to
Running and Ready with ``auto_ready=True``. Served by a thread (``ThreadingHTTPServer``) so
that agent processes, test code and the backend in the test's event loop can all reach it.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.support import kube_exec

_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[a-z0-9.]+)/v1)/namespaces/(?P<ns>[a-z0-9-]+)/(?P<res>[a-z]+)"
    r"(?:/(?P<name>[a-z0-9.-]+))?(?:/(?P<sub>scale|log|status|exec))?$"
)
KINDS = {
    "pods": "Pod",
    "services": "Service",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "secrets": "Secret",
    "deployments": "Deployment",
    "networkpolicies": "NetworkPolicy",
    "leases": "Lease",
}
HISTORY = 10_000  # events kept for watches; older versions answer 410 Gone


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(target: dict, patch: dict) -> dict:
    """RFC 7386 JSON merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _matches(obj: dict, selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip().lstrip("="):
            return False
    return True


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": self.message,
                "reason": self.reason, "code": self.code}  # fmt: skip


class KubeAPI:
    """The emulated cluster: objects keyed by (resource, namespace, name)."""

    def __init__(self, *, auto_ready: bool = False, cluster_ip: str = "127.0.0.1", storage: Path | None = None):
        self.auto_ready = auto_ready
        self._own_storage = storage is None
        self.volumes = kube_exec.Volumes(
            Path(tempfile.mkdtemp(prefix="kube-emulator-")) if storage is None else storage
        )
        self.cluster_ip = cluster_ip
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.events: list[tuple[int, str, str, str, dict]] = []  # (rv, resource, ns, type, obj)
        self.version = 0
        self.logs: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.faults: list[tuple[str, str, str, int]] = []  # (method, resource, name, status) to answer once
        self.on_pod_created: Callable[[dict], None] | None = None
        self.cond = threading.Condition()
        self.stopping = False
        self.server: ThreadingHTTPServer | None = None
        self.connections: set[Any] = set()

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> KubeAPI:
        api = self

        class Handler(_Handler):
            kube = api

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="kube-api", daemon=True).start()
        return self

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        with self.cond:  # keep-alive connections would go on being served: cut them
            for sock in list(self.connections):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        if self._own_storage:
            shutil.rmtree(self.volumes.root, ignore_errors=True)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def write_kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "test-token"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}],
            "current-context": "emulator",
        }
        path.write_text(json.dumps(config))
        return path

    # --- storage (call with self.cond held) -------------------------------------------------
    def _record(self, resource: str, ns: str, kind: str, obj: dict) -> None:
        self.version += 1
        if kind != "DELETED":
            obj["metadata"]["resourceVersion"] = str(self.version)
        self.events.append((self.version, resource, ns, kind, copy.deepcopy(obj)))
        del self.events[:-HISTORY]
        self.cond.notify_all()

    def _put(self, resource: str, ns: str, obj: dict, kind: str) -> dict:
        self.objects[(resource, ns, obj["metadata"]["name"])] = obj
        self._record(resource, ns, kind, obj)
        if resource == "deployments":
            self._reconcile(ns, obj)
        return obj

    def create(self, resource: str, ns: str, body: dict) -> dict:
        name = (body.get("metadata") or {}).get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        if (resource, ns, name) in self.objects:
            raise ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists')
        obj = copy.deepcopy(body)
        obj.update({"kind": KINDS[resource]})
        obj.setdefault("apiVersion", "v1")
        meta = obj["metadata"]
        meta.update({"namespace": ns, "uid": str(uuid.uuid4()), "creationTimestamp": _now(), "generation": 1})
        meta.pop("resourceVersion", None)
        if resource == "services":
            obj.setdefault("spec", {})["clusterIP"] = self.cluster_ip
        if resource == "secrets" and "stringData" in obj:
            obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in obj.pop("stringData").items()}
        if resource == "pods":
            obj.setdefault("status", {"phase": "Pending", "conditions": []})
        if resource == "persistentvolumeclaims":
            obj["status"] = {"phase": "Bound"}
            self.volumes.claim_dir(ns, name).mkdir(parents=True, exist_ok=True)  # its (empty) volume
        return self._put(resource, ns, obj, "ADDED")

    def get(self, resource: str, ns: str, name: str) -> dict:
        obj = self.objects.get((resource, ns, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{resource} "{name}" not found')
        return obj

    def replace(self, resource: str, ns: str, name: str, body: dict) -> dict:
        current = self.get(resource, ns, name)
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": '
                           "the object has been modified; please apply your changes to the latest version")  # fmt: skip
        obj = copy.deepcopy(body)
        obj["kind"] = current["kind"]
        obj["metadata"] = {**current["metadata"], **{k: v for k, v in obj.get("metadata", {}).items()
                                                     if k in ("labels", "annotations")}}  # fmt: skip
        return self._put(resource, ns, obj, "MODIFIED")

    def patch(self, resource: str, ns: str, name: str, patch: dict) -> dict:
        obj = copy.deepcopy(self.get(resource, ns, name))
        _merge(obj, patch)
        if resource == "secrets" and "stringData" in obj:
            encoded = {k: base64.b64encode(v.encode()).decode() for k, v in obj.pop("stringData").items()}
            obj["data"] = {**obj.get("data", {}), **encoded}
        return self._put(resource, ns, obj, "MODIFIED")

    def delete(self, resource: str, ns: str, name: str, body: dict | None = None) -> dict:
        obj = self.get(resource, ns, name)
        wanted = ((body or {}).get("preconditions") or {}).get("uid")
        if wanted and wanted != obj["metadata"]["uid"]:
            raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {wanted}, "
                           f"UID in object meta: {obj['metadata']['uid']}")  # fmt: skip
        del self.objects[(resource, ns, name)]
        self._record(resource, ns, "DELETED", obj)
        if resource == "deployments":  # the garbage collector
            for pod in self._owned_pods(ns, name):
                self.delete("pods", ns, pod["metadata"]["name"])
        elif resource == "persistentvolumeclaims":  # the reclaim policy Delete
            self.volumes.delete_claim(ns, name)
        elif resource == "pods":
            self.volumes.delete_pod(ns, name)
        return obj

    def list(self, resource: str, ns: str, selector: str = "") -> list[dict]:
        return [o for (r, n, _), o in self.objects.items() if r == resource and n == ns and _matches(o, selector)]

    # --- the Deployment controller ------------------------------------------------------------
    def _owned_pods(self, ns: str, deployment: str) -> list[dict]:
        return [
            p for p in self.list("pods", ns)
            if any(ref.get("name") == deployment for ref in p["metadata"].get("ownerReferences") or [])
        ]  # fmt: skip

    def _reconcile(self, ns: str, deployment: dict) -> None:
        name = deployment["metadata"]["name"]
        pods = self._owned_pods(ns, name)
        wanted = int((deployment.get("spec") or {}).get("replicas", 1) or 0)
        for pod in pods[wanted:]:
            self.delete("pods", ns, pod["metadata"]["name"])
        for _ in range(wanted - len(pods)):
            template = copy.deepcopy(deployment["spec"]["template"])
            pod = {
                "apiVersion": "v1",
                "metadata": {
                    "name": f"{name}-{secrets.token_hex(3)}",
                    "labels": template["metadata"].get("labels", {}),
                    "annotations": template["metadata"].get("annotations", {}),
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": name,
                            "uid": deployment["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": template["spec"],
            }
            created = self.create("pods", ns, pod)
            if self.auto_ready:
                self._set_pod(ns, created["metadata"]["name"], "ready")
            if self.on_pod_created is not None:
                self.on_pod_created(created)

    # --- what the test controls ---------------------------------------------------------------
    def _set_pod(
        self, ns: str, name: str, state: str, *, reason: str = "", message: str = "", exit_code: int = 1
    ) -> None:
        pod = copy.deepcopy(self.get("pods", ns, name))
        container = pod["spec"]["containers"][0]["name"]
        scheduled = {"type": "PodScheduled", "status": "True"}
        if state in ("ready", "running"):
            ready = state == "ready"
            pod["status"] = {
                "phase": "Running",
                "conditions": [scheduled, {"type": "Ready", "status": str(ready)}],
                "containerStatuses": [{"name": container, "ready": ready, "restartCount": 0,
                                       "state": {"running": {"startedAt": _now()}}}],
            }  # fmt: skip
        elif state == "waiting":
            last = {"terminated": {"exitCode": exit_code, "reason": "Error"}} if reason == "CrashLoopBackOff" else {}
            pod["status"] = {
                "phase": "Pending" if reason != "CrashLoopBackOff" else "Running",
                "conditions": [scheduled, {"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": container, "ready": False, "restartCount": 3 if last else 0,
                                       "state": {"waiting": {"reason": reason, "message": message}},
                                       "lastState": last}],
            }  # fmt: skip
        elif state == "unschedulable":
            pod["status"] = {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                "lastTransitionTime": _now()}]}  # fmt: skip
        elif state == "failed":
            pod["status"] = {
                "phase": "Failed", "message": message, "conditions": [scheduled],
                "containerStatuses": [{"name": container, "ready": False,
                                       "state": {"terminated": {"exitCode": exit_code, "reason": "Error"}}}],
            }  # fmt: skip
        else:
            raise ValueError(state)
        self._put("pods", ns, pod, "MODIFIED")

    def set_pod(self, ns: str, name: str, state: str, **details: Any) -> None:
        """Move a pod to ``ready``, ``running`` (not ready), ``waiting`` (``reason=...``),
        ``unschedulable`` or ``failed``; watchers see a MODIFIED event."""
        with self.cond:
            self._set_pod(ns, name, state, **details)

    def pods_of(self, ns: str, session_id: str) -> list[dict]:
        with self.cond:
            return copy.deepcopy(self.list("pods", ns, f"streamspace.io/session-id={session_id}"))

    def fail_once(self, method: str, resource: str, name: str, status: int = 409) -> None:
        """The next ``method`` on ``resource/name`` answers ``status`` (e.g. a renew conflict)."""
        with self.cond:
            self.faults.append((method, resource, name, status))

    # --- watches ----------------------------------------------------------------------------
    def watch(self, resource: str, ns: str, selector: str, since: str, timeout: float, emit) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            if since in ("", "0"):
                backlog = [("ADDED", copy.deepcopy(o)) for o in self.list(resource, ns, selector)]
                cursor = self.version
            else:
                cursor = int(since)
                if self.events and cursor < self.events[0][0] - 1:
                    backlog = [("ERROR", ApiError(410, "Expired", "too old resource version").status())]
                    cursor = -1
                else:
                    backlog = []
        for kind, obj in backlog:
            emit({"type": kind, "object": obj})
        if cursor < 0:
            return
        while True:
            with self.cond:
                fresh = [e for e in self.events if e[0] > cursor]
                while not fresh and not self.stopping and time.monotonic() < deadline:
                    self.cond.wait(max(0.0, deadline - time.monotonic()))
                    fresh = [e for e in self.events if e[0] > cursor]
                if not fresh:
                    return
                cursor = fresh[-1][0]
            for _, res, n, kind, obj in fresh:
                if res == resource and n == ns and _matches(obj, selector):
                    emit({"type": kind, "object": obj})


def running_kube(*, auto_ready: bool = False) -> Iterator[KubeAPI]:
    """A started emulator, stopped afterwards; for a fixture: ``yield from running_kube()``."""
    api = KubeAPI(auto_ready=auto_ready).start()
    try:
        yield api
    finally:
        api.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    kube: KubeAPI

    def log_message(self, *args: Any) -> None:
        return None

    def setup(self) -> None:
        super().setup()
        with self.kube.cond:
            self.kube.connections.add(self.connection)

    def finish(self) -> None:
        with self.kube.cond:
            self.kube.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def _send(self, code: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _route(self) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        kube = self.kube
        kube.requests.append((self.command, url.path))
        match = _PATH.match(url.path)
        if not match or match["res"] not in KINDS:
            self._body()
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({url.path})")
        resource, ns, name, sub = match["res"], match["ns"], match["name"], match["sub"]
        if sub == "exec" and resource == "pods":
            return self._exec(ns, name, parse_qs(url.query))
        body = self._body() if self.command in ("POST", "PUT", "PATCH", "DELETE") else {}
        with kube.cond:
            for fault in kube.faults:
                if fault[:3] == (self.command, resource, name):
                    kube.faults.remove(fault)
                    raise ApiError(fault[3], "Conflict" if fault[3] == 409 else "InternalError", "injected fault")
        if self.command == "GET" and name is None and query.get("watch") in ("true", "1"):
            return self._watch(resource, ns, query)
        with kube.cond:
            if self.command == "GET" and name is None:
                items = kube.list(resource, ns, query.get("labelSelector", ""))
                result: Any = {"kind": KINDS[resource] + "List", "apiVersion": "v1",
                               "metadata": {"resourceVersion": str(kube.version)}, "items": items}  # fmt: skip
            elif sub == "log":
                kube.get(resource, ns, name)
                return self._send(200, kube.logs.get(name, "").encode(), "text/plain")
            elif sub == "scale":
                result = self._scale(resource, ns, name, body)
            elif self.command == "GET":
                result = kube.get(resource, ns, name)
            elif self.command == "POST" and name is None:
                result = kube.create(resource, ns, body)
                return self._send(201, result)
            elif self.command == "PUT":
                result = kube.replace(resource, ns, name, body)
            elif self.command == "PATCH":
                if "json-patch" in (self.headers.get("Content-Type") or ""):
                    raise ApiError(415, "UnsupportedMediaType", "json-patch is not emulated")
                result = kube.patch(resource, ns, name, body)
            elif self.command == "DELETE":
                result = kube.delete(resource, ns, name, body)
            else:
                raise ApiError(405, "MethodNotAllowed", self.command)
            self._send(200, result)

    def _scale(self, resource: str, ns: str, name: str, body: dict) -> dict:
        kube = self.kube
        if resource != "deployments":
            raise ApiError(404, "NotFound", "no scale subresource")
        if self.command in ("PATCH", "PUT"):
            replicas = (body.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise ApiError(422, "Invalid", "spec.replicas must be a non-negative integer")
            kube.patch(resource, ns, name, {"spec": {"replicas": replicas}})
        deployment = kube.get(resource, ns, name)
        return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": name, "namespace": ns},
                "spec": {"replicas": deployment["spec"].get("replicas", 1)}}  # fmt: skip

    def _exec(self, ns: str, name: str, query: dict[str, list[str]]) -> None:
        kube = self.kube
        flags = {k: (query.get(k) or ["false"])[-1] in ("true", "1") for k in ("stdin", "stdout", "stderr", "tty")}
        command = query.get("command") or []
        if "websocket" not in (self.headers.get("Upgrade") or "").lower():
            raise ApiError(400, "BadRequest", "Upgrade request required")
        offered = [p.strip() for p in (self.headers.get("Sec-WebSocket-Protocol") or "").split(",")]
        if kube_exec.SUBPROTOCOL not in offered:
            raise ApiError(400, "BadRequest", f"none of the subprotocols {offered} is supported")
        if not command:
            raise ApiError(400, "BadRequest", "you must specify at least 1 command")
        if flags["tty"]:
            raise ApiError(400, "BadRequest", "tty is not emulated")
        with kube.cond:
            pod = copy.deepcopy(kube.get("pods", ns, name))
        try:
            container = kube_exec.check_pod(pod, (query.get("container") or [""])[-1])
        except kube_exec.ExecRefused as exc:
            raise ApiError(exc.code, exc.reason, exc.message) from None
        mounts = kube.volumes.mounts(ns, pod, container)
        kube_exec.serve(self, command, kube_exec.process_argv(command, mounts, pod, container), flags)

    def _watch(self, resource: str, ns: str, query: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def emit(event: dict) -> None:
            line = json.dumps(event).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()

        timeout = min(float(query.get("timeoutSeconds") or 30), 60.0)
        try:
            self.kube.watch(
                resource, ns, query.get("labelSelector", ""), query.get("resourceVersion", ""), timeout, emit
            )
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _dispatch(self) -> None:
        if self.kube.stopping:
            self.close_connection = True
            return
        try:
            self._route()
        except ApiError as exc:
            self._send(exc.code, exc.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

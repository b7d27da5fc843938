"""Kubernetes backend: per session a Deployment + ClusterIP Service ``ss-<session_id>``.

Objects are built by :mod:`.kubernetes_objects` (pure, tested as dicts). A Deployment of one
replica rather than a bare Pod: hibernation scales it to 0 and keeps the pod template, the
Service, the NetworkPolicy and the home PVC, so a wake is one scale call, and a pod lost with
its node is re-created by the Deployment controller without the agent.

State comes from two informers (:mod:`.kubernetes_cache`: list, then watch) on the
Deployments and Pods labelled for this agent; ``status`` and ``inventory`` read the cache and
cost no API request. ``streaming_ready`` is the pod's Ready condition, which its readiness
probe on the streaming port drives. A pod that cannot run (``ImagePullBackOff``,
``CrashLoopBackOff``, phase ``Failed``, ``Unschedulable`` for longer than
``unschedulable_timeout``) makes the session ``failed``; the watch reports it at once
through :meth:`Backend.workload_exited`, and :meth:`KubernetesBackend.exit_info` gives the
reason, the exit code and the pod's log tail. Files in a running session's home go through
the pod's ``exec`` subresource (:mod:`.kubernetes_files`).

Options (``--backend-option key=value`` or env ``STREAMSPACE_KUBERNETES_<KEY>``):
``namespace`` (default ``streamspace``), ``kubeconfig`` (default: ``KUBECONFIG``, else
in-cluster, else ``~/.kube/config``), ``storage_class`` (home PVCs; empty = the cluster's
default), ``home_size`` (default ``10Gi``), ``home_access_mode`` (default ``ReadWriteOnce``),
``home_mount_path`` (default ``/home/user``), ``shm_size`` (default ``1Gi``),
``image_pull_secrets`` (comma-separated Secret names), ``run_as_user`` (default 1000),
``network_policy`` (default ``true``), ``allowed_from`` (pod labels allowed to reach sessions:
``k=v,k=v;k=v``; default the chart's control-plane and agent components),
``unschedulable_timeout`` (seconds, default 60), ``endpoint`` (``dns``, the default:
``ss-<id>.<namespace>.svc:<port>``; ``cluster-ip``: ``<clusterIP>:<port>``, for an agent
outside the cluster that routes to Service IPs, and for tests whose API emulator hands out
loopback addresses).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agent_runtime.backends import kubernetes_client as kc
from agent_runtime.backends import kubernetes_objects as objects
from agent_runtime.backends.base import Backend, BackendError, MandateLost, SessionSpec, WorkloadExit
from agent_runtime.backends.homefiles import HomeEntry, HomeFile, HomeNotAvailable, HomePathNotFound
from agent_runtime.backends.kubernetes_cache import Informer
from agent_runtime.backends.kubernetes_files import PodHome
from agent_runtime.config import parse_bool
from agent_runtime.logtail import tail
from agent_runtime.protocol import LOG_TAIL_MAX_LINES, STEP_WORKLOAD, Capacity, InventoryItem

SYNC_TIMEOUT_S = 15.0
DEFAULT_ALLOWED_FROM = "app.kubernetes.io/component=control-plane;app.kubernetes.io/component=agent"

log = logging.getLogger(__name__)


class KubernetesBackend(Backend):
    platform = "kubernetes"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        kc.require_client()
        opts = self.options
        self.namespace = opts.get("namespace") or "streamspace"
        self.storage_class = opts.get("storage_class", "")
        self.home_size = objects.quantity(opts.get("home_size") or "10Gi", name="home_size")
        self.home_access_mode = opts.get("home_access_mode") or "ReadWriteOnce"
        self.home_mount_path = opts.get("home_mount_path") or "/home/user"
        self.shm_size = objects.quantity(opts.get("shm_size") or "1Gi", name="shm_size")
        self.image_pull_secrets = [s.strip() for s in opts.get("image_pull_secrets", "").split(",") if s.strip()]
        self.network_policy = parse_bool(opts.get("network_policy"), name="network_policy", default=True)
        self.allowed_from = objects.parse_peers(opts.get("allowed_from") or DEFAULT_ALLOWED_FROM)
        self.endpoint_mode = (opts.get("endpoint") or "dns").lower()
        if self.endpoint_mode not in ("dns", "cluster-ip"):
            raise BackendError(f"endpoint={self.endpoint_mode!r}: choose dns or cluster-ip")
        try:
            self.run_as_user = int(opts.get("run_as_user") or "1000")
            self.unschedulable_after = float(opts.get("unschedulable_timeout") or "60")
        except ValueError as exc:
            raise BackendError(f"kubernetes backend option: {exc}") from None
        self.selector = objects.selector(self.agent_id)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="k8s")
        self._api: Any = kc.api_client(self.options)  # fails the start-up without a cluster to talk to
        self._informers: dict[str, Informer] = {}
        self._cluster_ips: dict[str, str] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- plumbing -----------------------------------------------------------------------
    def _clients(self) -> tuple[Any, Any, Any]:
        api = self._api
        return kc.kubernetes.client.CoreV1Api(api), kc.kubernetes.client.AppsV1Api(api), api

    async def _call(
        self,
        doing: str,
        fn_name: str,
        api: str,
        *args: Any,
        missing_ok: bool = False,
        exists_ok: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Run one blocking API call in the pool; returns the JSON body, or None for a 404 when
        ``missing_ok`` and for a 409 when ``exists_ok``; any other failure is a
        :class:`BackendError` saying what the agent was doing."""

        def run() -> Any:
            core, apps, client = self._clients()
            target = {
                "core": core,
                "apps": apps,
                "net": kc.kubernetes.client.NetworkingV1Api(client),
            }[api]
            return kc.body(getattr(target, fn_name)(*args, _preload_content=False, **kwargs))

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, run)
        except kc.ApiException as exc:
            if (exc.status == 404 and missing_ok) or (exc.status == 409 and exists_ok):
                return None
            raise kc.api_error(exc, doing) from None
        except BackendError:
            raise
        except Exception as exc:  # connection refused, TLS, timeouts
            raise BackendError(f"kubernetes: {doing} failed: {exc}") from None

    async def _create(self, doing: str, fn_name: str, api: str, manifest: dict) -> bool:
        """Create ``manifest``; False when it exists already (created by an earlier attempt)."""
        return await self._call(doing, fn_name, api, self.namespace, manifest, exists_ok=True) is not None

    async def _informers_ready(self) -> None:
        if not self._informers:
            self._loop = asyncio.get_running_loop()
            core, apps, _ = self._clients()  # no I/O: the informers' threads do the requests
            self._informers = {
                "deployments": Informer(
                    "deployments", apps.list_namespaced_deployment, self.namespace, self.selector, self._event
                ),
                "pods": Informer("pods", core.list_namespaced_pod, self.namespace, self.selector, self._event),
            }
            for informer in self._informers.values():
                informer.start()
        deadline = time.monotonic() + SYNC_TIMEOUT_S
        for informer in self._informers.values():
            # Polled, not waited for in a thread: a thread blocked on the event would hold up
            # the agent's exit for as long as the API server is unreachable.
            while not informer.synced.is_set():
                if time.monotonic() > deadline:
                    raise BackendError(f"kubernetes: cannot list {informer.kind} in namespace {self.namespace}")
                await asyncio.sleep(0.05)

    # --- watch: exits without being asked -----------------------------------------------------
    def _event(self, kind: str, obj: dict | None) -> None:
        """Called on an informer's thread: hand the event to the event loop."""
        loop = self._loop
        if loop is not None and obj is not None and "containers" in (obj.get("spec") or {}):  # a pod
            loop.call_soon_threadsafe(self._pod_changed, kind, obj)

    def _pod_changed(self, kind: str, pod: dict) -> None:
        session_id = objects.session_id_of(pod)
        if not session_id or kind == "DELETED" or (pod.get("metadata") or {}).get("deletionTimestamp"):
            return  # a pod going away (hibernate, stop, a reschedule) is not a failure
        failure = objects.pod_failure(pod, unschedulable_after=self.unschedulable_after)
        if failure is not None:
            self.workload_exited(session_id, failure["exit_code"])
            return
        terminated = [
            (c.get("state") or {}).get("terminated")
            for c in (pod.get("status") or {}).get("containerStatuses") or []
            if (c.get("state") or {}).get("terminated")
        ]
        if terminated:  # the agent checks status: a restarting container is not a failure yet
            self.workload_exited(session_id, terminated[0].get("exitCode"))
        elif objects.pod_failure(pod, unschedulable_after=0.0) is not None:  # unschedulable: check again at the bound
            timer = self._timers.pop(session_id, None)
            if timer is not None:
                timer.cancel()
            assert self._loop is not None
            self._timers[session_id] = self._loop.call_later(
                self.unschedulable_after + 0.5, self.workload_exited, session_id, None
            )

    async def watch(self) -> None:
        await self._informers_ready()
        await asyncio.Event().wait()  # the informers' threads deliver events until close()

    # --- reading state ------------------------------------------------------------------------
    def _pods_of(self, session_id: str) -> list[dict]:
        return [p for p in self._informers["pods"].snapshot() if objects.session_id_of(p) == session_id]

    async def _endpoint(self, session_id: str, port: int) -> str:
        name = objects.workload_name(session_id)
        if self.endpoint_mode == "dns":
            return f"{name}.{self.namespace}.svc:{port}"
        ip = self._cluster_ips.get(session_id)
        if ip is None:
            service = await self._call(
                "reading the Service", "read_namespaced_service", "core", name, self.namespace, missing_ok=True
            )
            ip = ((service or {}).get("spec") or {}).get("clusterIP") or ""
            if ip:
                self._cluster_ips[session_id] = ip
        return f"{ip}:{port}" if ip else ""

    async def _item(self, session_id: str, deployment: dict | None) -> InventoryItem:
        state, ready, failure = objects.session_state(
            deployment, self._pods_of(session_id), unschedulable_after=self.unschedulable_after
        )
        if deployment is None:
            return InventoryItem(session_id=session_id, state="stopped")
        port = objects.streaming_port_of(deployment)
        if state != "running":
            code = failure["exit_code"] if failure else None
            return InventoryItem(session_id=session_id, state=state, streaming_port=port, exit_code=code)
        endpoint = await self._endpoint(session_id, port)
        return InventoryItem(
            session_id=session_id,
            state="running",
            streaming_ready=ready,
            streaming_port=port,
            endpoint=endpoint or None,
        )

    async def status(self, session_id: str) -> InventoryItem:
        await self._informers_ready()
        name = objects.workload_name(session_id)
        return await self._item(session_id, self._informers["deployments"].get(name))

    async def inventory(self) -> list[InventoryItem]:
        await self._informers_ready()
        items = []
        for deployment in self._informers["deployments"].snapshot():
            session_id = objects.session_id_of(deployment)
            if session_id:
                items.append(await self._item(session_id, deployment))
        return items

    async def exit_info(self, session_id: str) -> WorkloadExit:
        await self._informers_ready()
        pods = self._pods_of(session_id)
        failure = None
        for pod in pods:
            failure = objects.pod_failure(pod, unschedulable_after=self.unschedulable_after)
            if failure:
                break
        if failure is None:
            return WorkloadExit(description="The session's pod is gone or no longer running.")
        log_tail = ""
        if pods and failure["reason"] not in ("Unschedulable", "ImagePullBackOff", "InvalidImageName"):
            log_tail = await self._log_tail(
                pods[0]["metadata"]["name"], previous=failure["reason"] == "CrashLoopBackOff"
            )
        return WorkloadExit(exit_code=failure["exit_code"], description=failure["description"], log_tail=log_tail)

    async def _log_tail(self, pod_name: str, *, previous: bool) -> str:
        def read() -> str:
            core, _, _ = self._clients()
            response = core.read_namespaced_pod_log(
                pod_name, self.namespace, tail_lines=LOG_TAIL_MAX_LINES, previous=previous, _preload_content=False
            )
            return response.data.decode("utf-8", "replace")

        try:
            return tail(await asyncio.get_running_loop().run_in_executor(self._pool, read))
        except Exception as exc:  # the failure is reported without its log
            log.warning("pod log unavailable", extra={"pod": pod_name, "error": repr(exc)})
            return ""

    # --- the contract -------------------------------------------------------------------------
    async def _ensure_home(self, username: str) -> str:
        name = objects.home_claim_name(username)
        existing = await self._call(
            "reading the home PVC",
            "read_namespaced_persistent_volume_claim",
            "core",
            name,
            self.namespace,
            missing_ok=True,
        )
        if existing is None:
            claim = objects.home_claim(
                username,
                agent_id=self.agent_id,
                namespace=self.namespace,
                storage_class=self.storage_class,
                size=self.home_size,
                access_mode=self.home_access_mode,
            )
            if await self._create("creating the home PVC", "create_namespaced_persistent_volume_claim", "core", claim):
                log.info("home PVC created", extra={"user": username, "pvc": name})
        return name

    async def _ensure_secret(self, session_id: str, spec: SessionSpec) -> None:
        manifest = objects.secret_manifest(session_id, spec, agent_id=self.agent_id, namespace=self.namespace)
        if manifest is None:
            return
        if not await self._create("creating the session's Secret", "create_namespaced_secret", "core", manifest):
            await self._call(
                "updating the session's Secret",
                "patch_namespaced_secret",
                "core",
                manifest["metadata"]["name"],
                self.namespace,
                {"stringData": manifest["stringData"]},
                _content_type=kc.MERGE_PATCH,
            )

    async def start(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        name = objects.workload_name(session_id)
        home = await self._ensure_home(spec.require_user()) if spec.persistent_home else None
        await self._ensure_secret(session_id, spec)
        kw = {"agent_id": self.agent_id, "namespace": self.namespace}
        await self._create(
            "creating the Service",
            "create_namespaced_service",
            "core",
            objects.service_manifest(session_id, spec, **kw),
        )
        if self.network_policy:
            policy = objects.network_policy_manifest(session_id, spec, allowed_from=self.allowed_from, **kw)
            await self._create("creating the NetworkPolicy", "create_namespaced_network_policy", "net", policy)
        deployment = objects.deployment_manifest(
            session_id,
            spec,
            home_claim_name=home,
            home_mount_path=self.home_mount_path,
            shm_size=self.shm_size,
            image_pull_secrets=self.image_pull_secrets,
            run_as_user=self.run_as_user,
            **kw,
        )
        current = await self._call(
            "reading the Deployment", "read_namespaced_deployment", "apps", name, self.namespace, missing_ok=True
        )
        if current is None:
            await self.report_step(session_id, STEP_WORKLOAD, "Creating the session's Deployment")
            self.require_mandate(session_id, "create")
            try:
                created = await self._call(
                    "creating the Deployment",
                    "create_namespaced_deployment",
                    "apps",
                    self.namespace,
                    deployment,
                    exists_ok=True,  # 409: another replica's (or an earlier attempt's), never this call's
                )
            except BackendError:
                await self.report_step(session_id, STEP_WORKLOAD, "Creating the Deployment failed", "failed")
                raise
            uid = ((created or {}).get("metadata") or {}).get("uid")
            if not self.holds_mandate():
                await self._undo_create(session_id, name, uid)
            if created:
                log.info("deployment created", extra={"session_id": session_id, "deployment": name})
        elif int((current.get("spec") or {}).get("replicas") or 0) == 0:
            await self.report_step(session_id, STEP_WORKLOAD, "Scaling the session's Deployment to 1")
            self.require_mandate(session_id, "start")
            await self._scale(name, 1)
            if not self.holds_mandate():
                # A scale cannot tell whose it was (the successor may have woken the session
                # meanwhile): nothing is undone; the control plane stops or hibernates a
                # workload running against the session's state (docs/architecture.md §6.5).
                raise MandateLost(f"not_leader: leadership lost during the start step of session {session_id}")
        await self.report_step(session_id, STEP_WORKLOAD, "The session's pod is scheduled", "done")
        return await self._fresh_item(session_id)

    async def _fresh_item(self, session_id: str) -> InventoryItem:
        """The session's state after a change of ours: read through the API once (the watch may
        not have delivered the change yet), pods from the cache."""
        await self._informers_ready()
        name = objects.workload_name(session_id)
        deployment = await self._call(
            "reading the Deployment", "read_namespaced_deployment", "apps", name, self.namespace, missing_ok=True
        )
        return await self._item(session_id, deployment)

    async def _undo_create(self, session_id: str, name: str, uid: str | None) -> None:
        """A deposed leader's create: delete the Deployment it created, by the uid the API
        returned to that create (a delete precondition: a Deployment of the same name that the
        successor created has another uid, and the API refuses with 409), and raise."""
        if uid:
            await self._call(
                "deleting the Deployment this agent created",
                "delete_namespaced_deployment",
                "apps",
                name,
                self.namespace,
                body={"preconditions": {"uid": uid}},
                missing_ok=True,
                exists_ok=True,
                propagation_policy="Background",
            )
        log.warning("launch fenced: leadership lost", extra={"session_id": session_id, "undone": bool(uid)})
        raise MandateLost(f"not_leader: leadership lost during the create step of session {session_id}")

    async def _scale(self, name: str, replicas: int) -> None:
        await self._call(
            f"scaling the Deployment to {replicas}",
            "patch_namespaced_deployment_scale",
            "apps",
            name,
            self.namespace,
            {"spec": {"replicas": replicas}},
            _content_type=kc.MERGE_PATCH,
        )

    async def wake(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        return await self.start(session_id, spec)

    async def hibernate(self, session_id: str) -> InventoryItem:
        name = objects.workload_name(session_id)
        current = await self._call(
            "reading the Deployment", "read_namespaced_deployment", "apps", name, self.namespace, missing_ok=True
        )
        if current is None:
            raise BackendError(f"session {session_id} has no Deployment in namespace {self.namespace}")
        if int((current.get("spec") or {}).get("replicas") or 0) != 0:
            await self._scale(name, 0)
        return InventoryItem(
            session_id=session_id, state="hibernated", streaming_port=objects.streaming_port_of(current)
        )

    async def stop(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        name = objects.workload_name(session_id)
        current = await self._call(
            "reading the Deployment", "read_namespaced_deployment", "apps", name, self.namespace, missing_ok=True
        )
        for doing, fn_name, api in (
            ("deleting the Deployment", "delete_namespaced_deployment", "apps"),
            ("deleting the Service", "delete_namespaced_service", "core"),
            ("deleting the NetworkPolicy", "delete_namespaced_network_policy", "net"),
            ("deleting the session's Secret", "delete_namespaced_secret", "core"),
        ):
            await self._call(
                doing, fn_name, api, name, self.namespace, missing_ok=True, propagation_policy="Background"
            )
        self._cluster_ips.pop(session_id, None)
        if spec.delete_home:
            annotations = ((current or {}).get("metadata") or {}).get("annotations") or {}
            claim = annotations.get(objects.ANNOTATION_HOME) or (
                objects.home_claim_name(spec.user) if spec.user else ""
            )
            if claim:
                await self._call(
                    "deleting the home PVC",
                    "delete_namespaced_persistent_volume_claim",
                    "core",
                    claim,
                    self.namespace,
                    missing_ok=True,
                )
                log.info("home PVC deleted", extra={"session_id": session_id, "pvc": claim})
        log.info("session objects deleted", extra={"session_id": session_id})
        return InventoryItem(session_id=session_id, state="stopped")

    # --- files in the home (§23; kubernetes_files.py) -----------------------------------------
    def _open_exec(self, pod: str, argv: list[str], stdin: bool) -> Any:
        """Open an exec of ``argv`` in ``pod``'s session container (blocking): the client's
        WebSocket, binary. A client of its own: ``stream`` swaps the request method of the
        client it is given while it connects, which other threads' requests must not meet."""
        client = kc.kubernetes.client.ApiClient(self._api.configuration)
        try:
            core = kc.kubernetes.client.CoreV1Api(client)
            return kc.kubernetes.stream.stream(
                core.connect_get_namespaced_pod_exec,
                pod,
                self.namespace,
                command=argv,
                container=objects.SESSION_CONTAINER,
                stdin=stdin,
                stdout=True,
                stderr=True,
                tty=False,
                binary=True,
                _preload_content=False,
            )
        finally:
            client.close()

    async def _pod_home(self, session_id: str) -> PodHome:
        """The home of the session's running pod (exec needs a running container)."""
        await self._informers_ready()
        if self._informers["deployments"].get(objects.workload_name(session_id)) is None:
            raise HomePathNotFound("This agent has no such session.")
        pod = objects.running_pod(self._pods_of(session_id))
        if pod is None:
            raise HomeNotAvailable("The session is not running.")
        name = pod["metadata"]["name"]
        return PodHome(functools.partial(self._open_exec, name), objects.home_mount_of(pod, self.home_mount_path))

    async def home_stat(self, session_id: str, path: tuple[str, ...]) -> HomeEntry:
        return await (await self._pod_home(session_id)).stat(path)

    async def home_list(self, session_id: str, path: tuple[str, ...]) -> list[HomeEntry]:
        return await (await self._pod_home(session_id)).list(path)

    async def home_read(self, session_id: str, path: tuple[str, ...]) -> HomeFile:
        return await (await self._pod_home(session_id)).read(path)

    async def home_write(self, session_id: str, path: tuple[str, ...], size: int, chunks: Any) -> HomeEntry:
        return await (await self._pod_home(session_id)).write(path, size, chunks)

    async def home_delete(self, session_id: str, path: tuple[str, ...]) -> None:
        await (await self._pod_home(session_id)).delete(path)

    async def capacity(self) -> Capacity:
        """No size: what fits is the scheduler's business (an unschedulable pod fails its
        session with the scheduler's reason, §20.2); nodes pull missing images."""
        return Capacity(pulls_images=True)

    async def close(self) -> None:
        for informer in self._informers.values():
            informer.stop()
        for timer in self._timers.values():
            timer.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._api.close()

"""The Docker backend's Swarm mode (``STREAMSPACE_DOCKER_MODE=swarm``): one Swarm service per
session, so any manager sees every session wherever its task runs.

A session is the replicated service ``streamspace-<session_id>`` (:mod:`.docker_swarm_objects`)
with the labels of the plain mode on the service and on its containers. Start creates it
with replicas 1 and waits until its task runs or ends; hibernate scales it to 0 (the home
volume stays); wake scales it to 1; stop removes the service. ``inventory`` lists the
services labelled ``streamspace.managed-by=<agent>``, so a new leader on any manager finds
every session. ``streaming_ready`` needs a running task and an HTTP answer on its published
port. The restart policy is ``none``: a task that cannot start (image missing, no node fits)
or whose container exits is not replaced, and the session is ``failed`` with Swarm's reason
(:meth:`DockerSwarmBackend.exit_info`). :meth:`DockerSwarmBackend.watch` learns of exits from
the engine's ``die`` events (containers on this node) and from the task states of every
service (tasks on other nodes, and tasks rejected before a container existed), checked
every ``task_poll`` seconds.

Options (besides the plain mode's ``home_mount_path``, ``stop_timeout``):
``network`` (default ``streamspace-swarm``, an attachable overlay network the agent creates);
``publish_host``: ``node`` (default: the port is published in ``host`` mode on the node
running the task and reached at that node's Swarm address), an address to use instead of
the node's, or ``none`` (reach ``<service>:<port>`` on the overlay network);
``home_volume_driver`` (default ``local``); ``placement`` (comma-separated Swarm constraints
for every session, e.g. ``node.labels.streamspace==true``); ``start_timeout`` (seconds to
wait for a task to run, default 120); ``task_poll`` (seconds, default 2).

Homes: a ``local`` volume exists on one node. The first session of a user runs wherever
Swarm places it; the node then holding the home is recorded in the Swarm config
``streamspace-home-node-<home key>`` (raft state, so every manager sees it), and every later
service of that user, and every hibernated service, is pinned to it with the constraint
``node.id==<node>``. With a shared volume driver (``home_volume_driver``: NFS, a cluster
volume plugin) no pinning is needed and sessions can run on any node.

See docs/architecture.md §18.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import docker.errors

from agent_runtime.backends import docker_objects as objects
from agent_runtime.backends import docker_swarm_objects as swarm
from agent_runtime.backends import homes
from agent_runtime.backends.base import BackendError, MandateLost, SessionSpec, WorkloadExit, http_answers
from agent_runtime.backends.docker import DockerBackend
from agent_runtime.config import LeaseConfig
from agent_runtime.logtail import tail
from agent_runtime.protocol import LOG_TAIL_MAX_LINES, STEP_IMAGE, STEP_WORKLOAD, Capacity, InventoryItem

log = logging.getLogger(__name__)

HOME_NODE_CONFIG_PREFIX = "streamspace-home-node-"


def home_node_config_name(username: str) -> str:
    return HOME_NODE_CONFIG_PREFIX + homes.home_key(username)


class DockerSwarmBackend(DockerBackend):
    """Sessions as Swarm services; see the module docstring."""

    mode = "swarm"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        opts = self.options
        self.network = opts.get("network", swarm.DEFAULT_SWARM_NETWORK)
        publish = opts.get("publish_host", "node").strip()
        self.publish_host = None if publish.lower() in ("", "none", "false") else publish
        self.home_volume_driver = opts.get("home_volume_driver", "local").strip() or "local"
        self.placement = [c.strip() for c in opts.get("placement", "").split(",") if c.strip()]
        try:
            self.start_timeout = float(opts.get("start_timeout", "120"))
            self.task_poll = float(opts.get("task_poll", "2"))
        except ValueError:
            raise BackendError("start_timeout and task_poll must be numbers of seconds") from None
        self._node_addresses: dict[str, str] = {}
        self._reported_tasks: set[str] = set()

    # --- plumbing -----------------------------------------------------------------------
    async def prepare(self, lease: LeaseConfig) -> LeaseConfig:
        """Refuse to run unless the engine is a Swarm manager (only managers see every service)."""
        swarm.require_manager(await self.engine_info())
        return lease

    #: An overlay across the Swarm's nodes, attachable so the control plane or agent
    #: container can join it.
    network_options: dict[str, Any] = {"driver": "overlay", "attachable": True, "scope": "swarm"}

    async def _service(self, session_id: str) -> dict[str, Any] | None:
        client = await self.client()
        try:
            return await self._run(client.api.inspect_service, swarm.service_name(session_id))
        except docker.errors.NotFound:
            return None

    async def _tasks(self, service: dict[str, Any]) -> list[dict[str, Any]]:
        client = await self.client()
        return await self._run(client.api.tasks, filters={"service": service["ID"]})

    async def _update(
        self, service: dict[str, Any], *, replicas: int | None = None, pin: str | None = None, force: bool = False
    ) -> None:
        """Change a service's replicas, add a node constraint and/or (``force``) replace its
        task, at the version we read (a concurrent change makes Swarm refuse; the caller's
        command is then retried)."""
        spec = service["Spec"]
        template = dict(spec["TaskTemplate"])
        if force:
            template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
        if pin:
            placement = dict(template.get("Placement") or {})
            constraints = list(placement.get("Constraints") or [])
            if swarm.node_constraint(pin) not in constraints:
                placement["Constraints"] = [*constraints, swarm.node_constraint(pin)]
                template["Placement"] = placement
        mode = spec["Mode"] if replicas is None else {"Replicated": {"Replicas": replicas}}
        client = await self.client()
        await self._run(
            client.api.update_service,
            service["ID"],
            service["Version"]["Index"],
            task_template=template,
            name=spec["Name"],
            labels=spec.get("Labels") or {},
            mode=mode,
            update_config=spec.get("UpdateConfig"),
            rollback_config=spec.get("RollbackConfig"),
            endpoint_spec=spec.get("EndpointSpec"),
        )

    async def _node_address(self, node_id: str) -> str:
        if node_id not in self._node_addresses:
            client = await self.client()
            node = await self._run(client.api.inspect_node, node_id)
            address = (node.get("Status") or {}).get("Addr") or "127.0.0.1"
            self._node_addresses[node_id] = "127.0.0.1" if address in ("0.0.0.0", "::") else address
        return self._node_addresses[node_id]

    async def _item(self, session_id: str, service: dict[str, Any] | None, tasks: list | None = None) -> InventoryItem:
        if service is None:
            return InventoryItem(session_id=session_id, state="stopped")
        if tasks is None:
            tasks = await self._tasks(service)
        labels = service["Spec"].get("Labels") or {}
        port = int(labels.get(objects.LABEL_PORT, "8080"))
        state = swarm.session_state(service, tasks)
        task = swarm.latest_task(tasks)
        if state != "running":
            code = swarm.task_exit_code(task) if state == "failed" else None
            return InventoryItem(session_id=session_id, state=state, streaming_port=port, exit_code=code)
        if self.publish_host is None:
            endpoint = f"{swarm.service_name(session_id)}:{port}"
            return InventoryItem(session_id=session_id, state="running", streaming_port=port, endpoint=endpoint)
        published = swarm.published_port(task, port)
        ready = False
        endpoint = None
        if published:
            host = await self._node_address(task["NodeID"]) if self.publish_host == "node" else self.publish_host
            endpoint = f"{host}:{published}"
            ready = await http_answers(host, published, timeout=1.0)
        return InventoryItem(
            session_id=session_id, state="running", streaming_ready=ready, streaming_port=port, endpoint=endpoint
        )

    async def _await_task(self, session_id: str, old: set[str]) -> tuple[dict[str, Any] | None, InventoryItem]:
        """Wait (up to ``start_timeout``) until the session's task runs or ends; the tasks in
        ``old`` (those before a scale-up or a forced update) do not count."""
        deadline = time.monotonic() + self.start_timeout
        delay = 0.1
        while True:
            service = await self._service(session_id)
            if service is None:
                raise BackendError(f"the service of session {session_id} was removed while it started")
            tasks = [task for task in await self._tasks(service) if task["ID"] not in old]
            state = swarm.session_state(service, tasks)
            if state in ("running", "failed") or time.monotonic() >= deadline:
                return swarm.latest_task(tasks), await self._item(session_id, service, tasks)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    # --- homes --------------------------------------------------------------------------
    async def _home_node(self, username: str) -> str | None:
        """The node recorded as holding ``username``'s local home, if any."""
        client = await self.client()
        configs = await self._run(client.api.configs, filters={"name": home_node_config_name(username)})
        for config in configs:
            if config["Spec"]["Name"] == home_node_config_name(username):
                return (config["Spec"].get("Labels") or {}).get(swarm.LABEL_HOME_NODE)
        return None

    async def _record_home_node(self, username: str, node_id: str) -> None:
        client = await self.client()
        labels = {objects.LABEL_USER: username, objects.LABEL_MANAGED_BY: self.agent_id, swarm.LABEL_HOME_NODE: node_id}
        try:
            await self._run(client.api.create_config, home_node_config_name(username), node_id.encode(), labels=labels)
        except BackendError as exc:
            if "already exists" not in str(exc) and "AlreadyExists" not in str(exc):
                raise
        recorded = await self._home_node(username)
        if recorded and recorded != node_id:
            log.warning("home on two nodes", extra={"user": username, "recorded": recorded, "this_task": node_id})

    async def _forget_home_node(self, username: str) -> None:
        client = await self.client()
        with contextlib.suppress(docker.errors.NotFound, BackendError):
            await self._run(client.api.remove_config, home_node_config_name(username))

    # --- contract -----------------------------------------------------------------------
    async def start(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        local_home = spec.persistent_home and self.home_volume_driver == "local"
        service = await self._service(session_id)
        old: set[str] = set()
        if service is None:
            home_node = await self._home_node(spec.require_user()) if local_home else None
            config = swarm.service_config(
                session_id,
                spec,
                agent_id=self.agent_id,
                network=self.network,
                publish=self.publish_host is not None,
                home_mount_path=self.home_mount_path,
                home_volume_driver=self.home_volume_driver,
                home_node=home_node,
                constraints=self.placement,
                stop_timeout=self.stop_timeout,
            )
            await self._ensure_network()
            await self.report_step(session_id, STEP_IMAGE, f"Image {config['image']}: the Swarm node pulls it", "done")
            await self.report_step(session_id, STEP_WORKLOAD, "Creating the Swarm service")
            client = await self.client()
            self.require_mandate(session_id, "create")
            try:
                await self._run(client.services.create, **config)
            except BackendError as exc:
                if "already exists" not in str(exc) and "AlreadyExists" not in str(exc):
                    await self.report_step(session_id, STEP_WORKLOAD, "Creating the Swarm service failed", "failed")
                    raise
            log.info("swarm service created", extra={"session_id": session_id, "service": config["name"]})
            self._fenced(session_id, "create")
        elif swarm.replicas_of(service) == 0:
            old = {task["ID"] for task in await self._tasks(service)}
            await self.report_step(session_id, STEP_WORKLOAD, "Scaling the Swarm service to 1")
            self.require_mandate(session_id, "start")
            await self._update(service, replicas=1)
            self._fenced(session_id, "start")
        elif swarm.session_state(service, tasks := await self._tasks(service)) == "failed":
            old = {task["ID"] for task in tasks}
            await self.report_step(session_id, STEP_WORKLOAD, "Starting a new task for the Swarm service")
            pin = await self._home_node(spec.require_user()) if local_home else None
            await self._update(service, pin=pin, force=True)  # the new task lands where the home is
        task, item = await self._await_task(session_id, old)
        if item.state != "running":
            label = "The task did not run" if item.state == "failed" else "The task is still not running"
            await self.report_step(session_id, STEP_WORKLOAD, label, "failed")
            return InventoryItem(
                session_id=session_id, state="failed", streaming_port=item.streaming_port, exit_code=item.exit_code
            )
        if local_home and task and task.get("NodeID"):
            await self._record_home_node(spec.user, task["NodeID"])
        await self.report_step(session_id, STEP_WORKLOAD, "Swarm task running", "done")
        return item

    def _fenced(self, session_id: str, step: str) -> None:
        """After a side-effecting step: a deposed leader answers not_leader. Nothing is undone:
        a Swarm service running for the session cannot be told from one the successor adopted
        meanwhile; the control plane stops or hibernates a workload running against its
        session's state (docs/architecture.md §6.5)."""
        if not self.holds_mandate():
            raise MandateLost(f"not_leader: leadership lost during the {step} step of session {session_id}")

    async def wake(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        return await self.start(session_id, spec)

    async def hibernate(self, session_id: str) -> InventoryItem:
        service = await self._service(session_id)
        if service is None:
            raise BackendError(f"session {session_id} has no Swarm service")
        if swarm.replicas_of(service) > 0:
            labels = service["Spec"].get("Labels") or {}
            pin = None
            if labels.get(objects.LABEL_HOME) and self.home_volume_driver == "local":
                pin = await self._home_node(labels.get(objects.LABEL_USER, ""))
            await self._update(service, replicas=0, pin=pin)  # the wake lands where the home is
            await self._await_containers_gone(session_id)
        return await self._item(session_id, await self._service(session_id))

    async def _await_containers_gone(self, session_id: str) -> None:
        """Wait (bounded) until this node runs no container of the session, so a wake or a
        home deletion never meets the old container still holding the volume."""
        client = await self.client()
        deadline = time.monotonic() + self.stop_timeout + 10
        while time.monotonic() < deadline:
            # the API's list (no inspect of each container, which races with their removal)
            listed = await self._run(
                client.api.containers, all=True, filters={"label": f"{objects.LABEL_SESSION}={session_id}"}
            )
            if not [c for c in listed if (c.get("Labels") or {}).get(objects.LABEL_MANAGED_BY) == self.agent_id]:
                return
            await asyncio.sleep(0.2)

    async def stop(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        service = await self._service(session_id)
        home_volume = None
        if service is not None:
            home_volume = (service["Spec"].get("Labels") or {}).get(objects.LABEL_HOME)
            client = await self.client()
            with contextlib.suppress(docker.errors.NotFound):
                await self._run(client.api.remove_service, service["ID"])
            log.info("swarm service removed", extra={"session_id": session_id})
            await self._await_containers_gone(session_id)
        if spec.delete_home:
            names = [home_volume] if home_volume else []
            if spec.user:
                names.append(objects.home_volume_name(spec.user))
                await self._forget_home_node(spec.user)
            for name in dict.fromkeys(names):  # on this node; a home on another node stays (see docs)
                await self.home_volumes.delete(name)
        return InventoryItem(session_id=session_id, state="stopped")

    async def status(self, session_id: str) -> InventoryItem:
        return await self._item(session_id, await self._service(session_id))

    async def _services(self) -> list[dict[str, Any]]:
        client = await self.client()
        return await self._run(client.api.services, filters={"label": f"{objects.LABEL_MANAGED_BY}={self.agent_id}"})

    async def _tasks_by_service(self, services: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        by_service: dict[str, list[dict[str, Any]]] = {s["ID"]: [] for s in services}
        if services:
            client = await self.client()
            for task in await self._run(client.api.tasks, filters={"service": list(by_service)}):
                by_service.setdefault(task.get("ServiceID", ""), []).append(task)
        return by_service

    async def inventory(self) -> list[InventoryItem]:
        services = await self._services()
        tasks = await self._tasks_by_service(services)
        items = []
        for service in services:
            session_id = (service["Spec"].get("Labels") or {}).get(objects.LABEL_SESSION)
            if session_id:
                items.append(self._item(session_id, service, tasks[service["ID"]]))
        return sorted(await asyncio.gather(*items), key=lambda item: item.session_id)

    async def exit_info(self, session_id: str) -> WorkloadExit:
        service = await self._service(session_id)
        if service is None:
            return WorkloadExit(description="The session's Swarm service is gone.")
        task = swarm.latest_task(await self._tasks(service))
        code = swarm.task_exit_code(task)
        output = b""
        if code is not None:
            client = await self.client()
            try:
                chunks = await self._run(
                    lambda: list(
                        client.api.service_logs(service["ID"], stdout=True, stderr=True, tail=LOG_TAIL_MAX_LINES)
                    )
                )
                output = b"".join(chunks)
            except (BackendError, docker.errors.NotFound) as exc:
                output = f"(the service's log cannot be read: {exc})".encode()
        return WorkloadExit(exit_code=code, description=swarm.task_failure(task), log_tail=tail(output))

    async def capacity(self) -> Capacity:
        """The swarm's ready nodes added up; ``images`` is None (any node may pull an image)."""
        capacity = Capacity(pulls_images=True)
        try:
            client = await self.client()
            nodes = await self._run(client.api.nodes)
        except Exception as exc:  # a capacity report must never stop registration or a heartbeat
            log.warning("cannot list swarm nodes", extra={"error": str(exc)})
            return await super().capacity()
        for node in nodes:
            if (node.get("Status") or {}).get("State") != "ready":
                continue
            resources = (node.get("Description") or {}).get("Resources") or {}
            capacity.cpu_millicores += int(resources.get("NanoCPUs", 0)) // 1_000_000
            capacity.memory_mb += int(resources.get("MemoryBytes", 0)) // (1024 * 1024)
        capacity.images = None
        return capacity

    # --- exits --------------------------------------------------------------------------
    async def watch(self) -> None:
        """Container ``die`` events of this node (the plain mode's stream: the session's
        containers carry its labels) and the task states of every node, until cancelled."""
        await asyncio.gather(super().watch(), self._poll_tasks())

    async def _poll_tasks(self) -> None:
        while True:
            try:
                await self.check_tasks()
            except Exception as exc:  # the engine went away: try again at the next poll
                log.warning("cannot read swarm tasks", extra={"error": str(exc)})
            await asyncio.sleep(self.task_poll)

    async def check_tasks(self) -> list[str]:
        """Report every session whose newest task ended while the service wants it running
        (once per task); returns the session ids reported."""
        services = [s for s in await self._services() if swarm.replicas_of(s) > 0]
        tasks = await self._tasks_by_service(services)
        reported = []
        for service in services:
            session_id = (service["Spec"].get("Labels") or {}).get(objects.LABEL_SESSION)
            task = swarm.latest_task(tasks[service["ID"]])
            if not session_id or task is None or task["ID"] in self._reported_tasks:
                continue
            if swarm.session_state(service, tasks[service["ID"]]) == "failed":
                self._reported_tasks.add(task["ID"])
                self.workload_exited(session_id, swarm.task_exit_code(task))
                reported.append(session_id)
        return reported

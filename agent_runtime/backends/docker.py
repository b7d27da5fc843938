"""Docker backend: one container per session on any Docker-compatible engine (``DOCKER_HOST``).

The blocking Docker SDK runs in a small thread pool (dockerspawner's ``self.docker(...)``),
never on the event loop. Containers are found again by name and labels, so an agent restart
loses nothing: ``inventory`` lists the containers labelled ``streamspace.managed-by=<agent>``.

Options (``--backend-option key=value`` or env ``STREAMSPACE_DOCKER_<KEY>``):
``isolation`` (``session``, the default: a network per session, :mod:`.docker_networks`;
``shared``: every session on ``network``), ``network`` (the shared network, default
``streamspace``), ``subnet_pool`` and ``subnet_prefix`` (where per-session networks get their
subnets, default ``10.213.0.0/16`` in /28s), ``agent_container`` (``auto``, ``none`` or the
agent's own container, which joins every session network), ``publish_host`` (default
``none``: the port is not published and the session is reached at its address on its network;
a host address such as ``127.0.0.1`` publishes it there on a random port), ``home_mount_path``
(default ``/home/user``), ``stop_timeout`` (seconds, default 10), ``pull`` (``missing`` or
``never``), ``mode`` (``plain``, the default: containers on this one daemon; ``swarm``: Swarm
services, :mod:`.docker_swarm`, which constructing ``DockerBackend`` with that option returns;
Swarm sessions share the overlay network ``streamspace-swarm``), and ``daemon_claim``
(``enforce`` or ``off``: one agent per daemon, :mod:`.docker_daemon`).

Readiness: ``streaming_ready`` is true once the session's port answers HTTP where the control
plane or the agent's tunnel reaches it: the published address, else the container's address
on its network, probed from the agent (on the host, or joined to the network).

Exits: :meth:`DockerBackend.watch` follows the engine's event stream (``die`` events of
this agent's containers) and reports each exit at once; :meth:`DockerBackend.exit_info`
reads the container's exit code (``State.ExitCode``, ``OOMKilled``) and its log tail. A
stopped container is what a hibernated session looks like, so ``status`` cannot tell a
crash from a hibernation by itself: the agent knows which of its sessions it hibernated,
and the control plane fails a session it holds as running whose container stopped.

Persistent homes: each user's home is a volume of their own; a home volume of an earlier
release is kept for the one user it provably belongs to (:mod:`.docker_homes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

try:  # optional dependency: pip install streamspace-agent[docker]
    import docker
    import docker.errors
except ImportError:
    docker = None

from agent_runtime.backends import docker_daemon
from agent_runtime.backends import docker_fence as fence
from agent_runtime.backends import docker_networks as networks
from agent_runtime.backends import docker_objects as objects
from agent_runtime.backends.base import (
    Backend,
    BackendError,
    MandateLost,
    SessionSpec,
    WorkloadExit,
    describe_exit,
    host_capacity,
    http_answers,
)
from agent_runtime.backends.docker_files import DockerHome
from agent_runtime.backends.docker_homes import HomeVolumes
from agent_runtime.backends.homefiles import HomeEntry, HomeFile, HomeNotAvailable, HomePathNotFound
from agent_runtime.config import LeaseConfig
from agent_runtime.images import missing_image_hint
from agent_runtime.logtail import tail
from agent_runtime.protocol import (
    LOG_TAIL_MAX_LINES,
    MAX_REPORTED_IMAGES,
    STEP_IMAGE,
    STEP_WORKLOAD,
    Capacity,
    InventoryItem,
    image_key,
)

EVENTS_RETRY_MAX_S = 30.0  # the event stream is re-opened after a failure, backing off to this
MODES = ("plain", "swarm")

log = logging.getLogger(__name__)


class DockerBackend(Backend):
    platform = "docker"
    mode = "plain"

    def __new__(cls, **kwargs: Any) -> DockerBackend:
        """``mode=swarm`` (``STREAMSPACE_DOCKER_MODE``) builds the Swarm mode's subclass, so every
        place that constructs the ``docker`` backend gets the mode its options ask for."""
        mode = str((kwargs.get("options") or {}).get("mode", "plain")).strip().lower() or "plain"
        if mode not in MODES:
            raise BackendError(f"STREAMSPACE_DOCKER_MODE={mode!r} is not a mode of the docker backend (plain, swarm)")
        if mode == "swarm" and cls is DockerBackend:
            from agent_runtime.backends.docker_swarm import DockerSwarmBackend  # noqa: PLC0415 it imports this module

            cls = DockerSwarmBackend
        return super().__new__(cls)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        if docker is None:
            raise BackendError("the docker backend needs the 'docker' package (pip install docker)")
        opts = self.options
        self.daemon_claim = opts.get("daemon_claim", "enforce").strip().lower()
        if self.daemon_claim not in docker_daemon.CLAIM_POLICIES:
            raise BackendError(
                f"daemon_claim={self.daemon_claim!r} must be one of {', '.join(docker_daemon.CLAIM_POLICIES)}"
            )
        self.network = opts.get("network", objects.DEFAULT_NETWORK)
        self.isolation = opts.get("isolation", "session").strip().lower()
        if self.isolation not in ("session", "shared"):
            raise BackendError(f"isolation={self.isolation!r}: use 'session' (a network per session) or 'shared'")
        publish = opts.get("publish_host", "none")
        self.publish_host = None if publish.lower() in ("", "none", "false") else publish
        self.home_mount_path = opts.get("home_mount_path", objects.DEFAULT_HOME_MOUNT)
        self.stop_timeout = int(float(opts.get("stop_timeout", "10")))
        self.pull = opts.get("pull", "missing")
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="docker")
        self._events_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="docker-events")
        self._events_stream: Any = None
        self._client: Any = None
        self._network_ready = False
        self.home_volumes = HomeVolumes(self._run, self.client, self.agent_id)
        self.networks = networks.SessionNetworks(
            self._run,
            self.client,
            self.agent_id,
            pool=opts.get("subnet_pool", networks.DEFAULT_SUBNET_POOL),
            prefix=opts.get("subnet_prefix", str(networks.DEFAULT_SUBNET_PREFIX)),
            agent_container=opts.get("agent_container", "auto"),
        )

    # --- plumbing -----------------------------------------------------------------------
    async def _run(self, fn, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking Docker SDK call in the pool; API errors become BackendError."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except docker.errors.NotFound:
            raise
        except docker.errors.APIError as exc:
            raise BackendError(f"docker: {exc.explanation or exc}") from None
        except docker.errors.DockerException as exc:
            raise BackendError(f"docker: {exc}") from None

    def _docker(self) -> Any:
        if self._client is None:
            self._client = docker.from_env()
        return self._client

    async def client(self) -> Any:
        return await self._run(self._docker)

    async def engine_info(self) -> dict[str, Any]:
        """``docker info``, waiting (backing off to 30 s) while the engine does not answer: an
        agent started before its engine (boot order) waits for it instead of exiting."""
        delay = 0.5
        while True:
            try:
                client = await self.client()
                return await self._run(client.info)
            except BackendError as exc:
                log.warning("the docker engine does not answer; waiting", extra={"error": str(exc), "delay_s": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, EVENTS_RETRY_MAX_S)

    async def prepare(self, lease: LeaseConfig) -> LeaseConfig:
        """Claim the daemon for this agent (refusing one another agent manages) and scope the
        lease to it, so only replicas sharing this daemon elect together (:mod:`.docker_daemon`)."""
        daemon_id = str((await self.engine_info()).get("ID") or "")
        if self.daemon_claim == "enforce":
            daemon_id = await self._run(docker_daemon.claim_daemon, await self.client(), self.agent_id)
        return docker_daemon.daemon_lease(lease, daemon_id) if daemon_id else lease

    async def _container(self, session_id: str) -> Any | None:
        client = await self.client()
        try:
            return await self._run(client.containers.get, objects.container_name(session_id))
        except docker.errors.NotFound:
            return None

    #: How the agent's shared network is created: a bridge on this one engine.
    network_options: dict[str, Any] = {"driver": "bridge"}

    async def _ensure_network(self) -> None:
        if self._network_ready:
            return
        client = await self.client()
        try:
            await self._run(client.networks.get, self.network)
        except docker.errors.NotFound:
            try:
                await self._run(
                    client.networks.create,
                    self.network,
                    labels={objects.LABEL_MANAGED_BY: self.agent_id},
                    check_duplicate=True,
                    **self.network_options,
                )
            except BackendError as exc:  # created concurrently by another agent replica
                if "already exists" not in str(exc):
                    raise
        self._network_ready = True

    async def _ensure_image(self, session_id: str, image: str) -> None:
        client = await self.client()
        try:
            await self._run(client.images.get, image)
            await self.report_step(session_id, STEP_IMAGE, f"Image {image} is present", "done")
            return
        except docker.errors.NotFound:
            if self.pull == "never":
                await self.report_step(session_id, STEP_IMAGE, f"Image {image} is not on this host", "failed")
                raise BackendError(
                    f"The image {image} is not on this Docker host, which does not pull images. "
                    + missing_image_hint(image)
                ) from None
        log.info("pulling image", extra={"image": image})
        await self.report_step(session_id, STEP_IMAGE, f"Pulling image {image}")
        try:
            await self._run(client.images.pull, image)
        except (BackendError, docker.errors.NotFound) as exc:
            await self.report_step(session_id, STEP_IMAGE, f"Pulling image {image} failed", "failed")
            reason = str(exc).removeprefix("docker: ")
            raise BackendError(
                f"The image {image} is not on this Docker host and pulling it failed ({reason}). "
                + missing_image_hint(image)
            ) from None
        await self.report_step(session_id, STEP_IMAGE, f"Pulled image {image}", "done")

    async def _item(self, session_id: str, container: Any | None) -> InventoryItem:
        if container is None:
            return InventoryItem(session_id=session_id, state="stopped")
        attrs = container.attrs
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        port = int(labels.get(objects.LABEL_PORT, "8080"))
        state = objects.state_of(attrs)
        if state != "running":
            return InventoryItem(
                session_id=session_id, state=state, streaming_port=port, exit_code=objects.exit_code_of(attrs)
            )
        endpoint = await self._endpoint(session_id, attrs, port)
        ready = False
        if endpoint:
            host, _, host_port = endpoint.rpartition(":")
            ready = await http_answers(host, int(host_port), timeout=1.0)
        return InventoryItem(
            session_id=session_id, state="running", streaming_ready=ready, streaming_port=port, endpoint=endpoint
        )

    def _session_network(self, session_id: str) -> str:
        return networks.network_name(session_id) if self.isolation == "session" else self.network

    async def _endpoint(self, session_id: str, attrs: dict[str, Any], port: int) -> str | None:
        """``host:port`` where the session answers: its published address, else its address on
        its network (which this agent joins first when it runs in a container)."""
        if self.publish_host:
            return objects.published_endpoint(attrs, port)
        network = self._session_network(session_id)
        address = networks.address_on(attrs, network)
        if address is None:
            return None
        try:
            await self.networks.join(network)
        except BackendError as exc:  # reported as not ready; the next status tries again
            log.warning("cannot join the session's network", extra={"network": network, "error": str(exc)})
            return None
        return f"{address}:{port}"

    async def _reload(self, container: Any) -> Any:
        await self._run(container.reload)
        return container

    # --- contract -----------------------------------------------------------------------
    async def start(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        # Resolved on every start and wake, also for an existing container: that records
        # (once) which home the user keeps while the evidence (this container) still exists.
        home_volume = await self.home_volumes.for_user(spec.require_user()) if spec.persistent_home else None
        config = objects.container_config(
            session_id,
            spec,
            agent_id=self.agent_id,
            network=self._session_network(session_id),
            publish_host=self.publish_host,
            home_mount_path=self.home_mount_path,
            home_volume=home_volume,
        )
        container = await self._container(session_id)
        created: str | None = None  # the id of the container this call created
        started: str | None = None  # the id of the container this call started
        if container is None:
            await self._ensure_image(session_id, config["image"])
            self.require_mandate(session_id, "network")
            if self.isolation == "session":
                await self.networks.ensure(session_id)
            else:
                await self._ensure_network()
            await self.report_step(session_id, STEP_WORKLOAD, "Creating the container")
            client = await self.client()
            self.require_mandate(session_id, "create")
            try:
                container = await self._run(client.containers.create, **config)
                created = container.id
            except BackendError as exc:
                if "Conflict" not in str(exc) and "already in use" not in str(exc):
                    await self.report_step(session_id, STEP_WORKLOAD, "Creating the container failed", "failed")
                    await self._fence(
                        session_id, "create", created, started
                    )  # a deposed leader's failure is not_leader
                    raise
                # 409: the name is taken by a container another replica (or an earlier
                # launch) created; it is taken as the session's, and is never this call's to undo.
                container = await self._container(session_id)
                if container is None:
                    raise
            await self._fence(session_id, "create", created, started)
            if created:
                log.info("container created", extra={"session_id": session_id, "container": config["name"]})
        if container.status != "running":
            await self.report_step(session_id, STEP_WORKLOAD, "Starting the container")
            await self._fence(session_id, "start", created, started)  # lost since the create: undo it
            self.require_mandate(session_id, "start")
            try:
                if await self._run(fence.start_container, await self.client(), container.id):
                    started = container.id
            except (BackendError, docker.errors.NotFound) as exc:
                await self.report_step(session_id, STEP_WORKLOAD, "Starting the container failed", "failed")
                if isinstance(exc, docker.errors.NotFound):  # removed meanwhile (a stop by the new leader)
                    await self._fence(session_id, "start", created, started)
                    raise BackendError(
                        f"session {session_id}'s container was removed while it was being started"
                    ) from None
                await self._fence(session_id, "start", created, started)
                raise
            await self._fence(session_id, "start", created, started)
        item = await self._item(session_id, await self._reload(container))
        if item.state != "running":  # it ended as soon as it started
            await self.report_step(session_id, STEP_WORKLOAD, "The container exited at once", "failed")
            return InventoryItem(
                session_id=session_id, state="failed", streaming_port=item.streaming_port, exit_code=item.exit_code
            )
        await self.report_step(session_id, STEP_WORKLOAD, "Container started", "done")
        return item

    async def _fence(self, session_id: str, step: str, created: str | None, started: str | None) -> None:
        """Right after a side-effecting step of a launch: if the mandate ended meanwhile, undo
        what this launch itself did (:mod:`.docker_fence`) and raise :class:`MandateLost`."""
        if self.holds_mandate():
            return
        undone = await self._run(
            fence.undo_launch, await self.client(), created=created, started=started, stop_timeout=self.stop_timeout
        )
        log.warning("launch fenced: leadership lost", extra={"session_id": session_id, "step": step, "undone": undone})
        raise MandateLost(f"not_leader: leadership lost during the {step} step of session {session_id}")

    async def wake(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        return await self.start(session_id, spec)

    async def hibernate(self, session_id: str) -> InventoryItem:
        container = await self._container(session_id)
        if container is None:
            raise BackendError(f"session {session_id} has no container on this host")
        if container.status in ("running", "restarting", "paused"):
            await self._run(container.stop, timeout=self.stop_timeout)
        return await self._item(session_id, await self._reload(container))

    async def stop(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        container = await self._container(session_id)
        home_volume = None
        if container is not None:
            home_volume = ((container.attrs.get("Config") or {}).get("Labels") or {}).get(objects.LABEL_HOME)
            with contextlib.suppress(docker.errors.NotFound):
                await self._run(container.remove, force=True)
            log.info("container removed", extra={"session_id": session_id})
        if self.isolation == "session":
            await self.networks.remove(session_id)
        if spec.delete_home:
            await self.home_volumes.delete_home(spec.user, home_volume)
        return InventoryItem(session_id=session_id, state="stopped")

    async def status(self, session_id: str) -> InventoryItem:
        return await self._item(session_id, await self._container(session_id))

    async def capacity(self) -> Capacity:
        """The host's size, the images present on the engine and whether missing ones are pulled.

        ``images`` is None when the engine cannot be asked (the agent still registers: its
        sessions' state comes from the inventory) or holds more than ``MAX_REPORTED_IMAGES``
        references; the control plane then assumes any image may be present.
        """
        capacity = host_capacity()
        capacity.pulls_images = self.pull != "never"
        try:
            client = await self.client()
            images = await self._run(client.images.list)
        except Exception as exc:  # a capacity report must never stop registration or a heartbeat
            log.warning("cannot list images", extra={"error": str(exc)})
            return capacity
        capacity.images = local_image_keys(image.attrs for image in images)
        return capacity

    async def inventory(self) -> list[InventoryItem]:
        client = await self.client()
        containers = await self._run(
            client.containers.list, all=True, filters={"label": f"{objects.LABEL_MANAGED_BY}={self.agent_id}"}
        )
        items = []
        for container in containers:
            session_id = ((container.attrs.get("Config") or {}).get("Labels") or {}).get(objects.LABEL_SESSION)
            if session_id:
                items.append(self._item(session_id, container))
        return sorted(await asyncio.gather(*items), key=lambda item: item.session_id)

    async def exit_info(self, session_id: str) -> WorkloadExit:
        container = await self._container(session_id)
        if container is None:
            return WorkloadExit(description="The session's container is gone.")
        state = container.attrs.get("State") or {}
        code = objects.exit_code_of(container.attrs)
        description = describe_exit("container", code, oom=bool(state.get("OOMKilled")))
        if state.get("Error"):
            description = f"{description} Docker: {state['Error']}"
        try:
            output = await self._run(container.logs, stdout=True, stderr=True, tail=LOG_TAIL_MAX_LINES)
        except (BackendError, docker.errors.NotFound) as exc:
            output = f"(the container's log cannot be read: {exc})".encode()
        return WorkloadExit(exit_code=code, description=description, log_tail=tail(output))

    async def watch(self) -> None:
        """Follow the engine's ``die`` events of this agent's containers; re-open the stream
        after a failure (from where it broke, so no exit is missed) until cancelled."""
        loop = asyncio.get_running_loop()
        since: float | None = None
        delay = 1.0
        while True:
            opened = time.time()
            try:
                await loop.run_in_executor(self._events_pool, self._follow_events, loop, since)
            except Exception as exc:  # the engine went away or the stream broke
                log.warning("docker event stream ended; re-opening", extra={"error": str(exc), "delay_s": delay})
            since = opened - 1  # events of the last second may come twice: an exit is checked, not counted
            if time.time() - opened > EVENTS_RETRY_MAX_S:
                delay = 1.0  # it had been working: start the backoff again
            await asyncio.sleep(delay)
            delay = min(delay * 2, EVENTS_RETRY_MAX_S)

    def _follow_events(self, loop: asyncio.AbstractEventLoop, since: float | None) -> None:
        """Blocking (the events thread): hand each container exit to the event loop."""
        stream = self._docker().events(
            since=int(since) if since else None,
            decode=True,
            filters={"type": "container", "event": ["die"], "label": [f"{objects.LABEL_MANAGED_BY}={self.agent_id}"]},
        )
        self._events_stream = stream
        try:
            for event in stream:
                attributes = (event.get("Actor") or {}).get("Attributes") or {}
                session_id = attributes.get(objects.LABEL_SESSION)
                if session_id:
                    code = attributes.get("exitCode")
                    exit_code = int(code) if isinstance(code, str) and code.isdigit() else None
                    loop.call_soon_threadsafe(self.workload_exited, session_id, exit_code)
        finally:
            self._events_stream = None
            stream.close()

    async def close(self) -> None:
        stream = self._events_stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()  # ends the events thread's blocking read
        self._events_pool.shutdown(wait=False)
        if self._client is not None:
            await self._run(self._client.close)
        self._pool.shutdown(wait=False)

    # --- files in the home (§23) ----------------------------------------------------------
    async def _session_home(self, session_id: str) -> DockerHome:
        """The running session container's home (exec needs a running container)."""
        container = await self._container(session_id)
        if container is None:
            raise HomePathNotFound("This agent has no such session.")
        if container.status != "running":
            raise HomeNotAvailable("The session is not running.")
        return DockerHome(container, objects.home_path(container.attrs, self.home_mount_path))

    async def home_stat(self, session_id: str, path: tuple[str, ...]) -> HomeEntry:
        return await (await self._session_home(session_id)).stat(path)

    async def home_list(self, session_id: str, path: tuple[str, ...]) -> list[HomeEntry]:
        return await (await self._session_home(session_id)).list(path)

    async def home_read(self, session_id: str, path: tuple[str, ...]) -> HomeFile:
        return await (await self._session_home(session_id)).read(path)

    async def home_write(self, session_id: str, path: tuple[str, ...], size: int, chunks: Any) -> HomeEntry:
        return await (await self._session_home(session_id)).write(path, size, chunks)

    async def home_delete(self, session_id: str, path: tuple[str, ...]) -> None:
        await (await self._session_home(session_id)).delete(path)


def local_image_keys(images: Iterable[dict[str, Any]]) -> list[str] | None:
    """The :func:`~agent_runtime.protocol.image_key` of every tag and digest of the engine's
    images (``attrs`` of ``client.images.list()``), sorted; None if there are more than
    ``MAX_REPORTED_IMAGES``."""
    keys: set[str] = set()
    for attrs in images:
        for ref in [*(attrs.get("RepoTags") or []), *(attrs.get("RepoDigests") or [])]:
            if ref and not ref.startswith("<none>"):
                keys.add(image_key(ref))
        if len(keys) > MAX_REPORTED_IMAGES:
            return None
    return sorted(keys)

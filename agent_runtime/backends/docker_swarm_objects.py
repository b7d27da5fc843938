"""Pure builders and readers for the Docker backend's Swarm mode (no I/O).

A session is a replicated Swarm service ``streamspace-<session_id>`` (replicas 1 running,
0 hibernated) whose restart policy is ``none``: a task that fails is not replaced, so its
failure stays visible as the service's latest task. These functions turn a session spec
into the keyword arguments of ``client.services.create`` (docker SDK) and Swarm's service
and task objects (inspect output) into session states, so they are tested as plain dicts.

See docs/architecture.md §18.1.
"""

from __future__ import annotations

from typing import Any

import msgspec

from agent_runtime.backends import docker_objects as objects
from agent_runtime.backends.base import BackendError, SessionSpec, describe_exit

DEFAULT_SWARM_NETWORK = "streamspace-swarm"
LABEL_HOME_NODE = "streamspace.home-node"  # on a service: the node that holds its local home volume
NANO = 1_000_000_000

# Swarm task states (swarmkit api/types.proto), grouped by what they mean for a session.
TASK_STARTING = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
TASK_ENDED = {"complete", "failed", "rejected", "orphaned", "shutdown", "remove"}


def service_name(session_id: str) -> str:
    """The session's service name (the same as the plain mode's container name)."""
    return objects.container_name(session_id)


def node_constraint(node_id: str) -> str:
    return f"node.id=={node_id}"


def service_config(
    session_id: str,
    spec: SessionSpec,
    *,
    agent_id: str,
    network: str = DEFAULT_SWARM_NETWORK,
    publish: bool = True,
    home_mount_path: str = objects.DEFAULT_HOME_MOUNT,
    home_volume_driver: str = "local",
    home_node: str | None = None,
    constraints: list[str] | None = None,
    stop_timeout: int = 10,
) -> dict[str, Any]:
    """Keyword arguments for ``client.services.create`` for one session.

    ``publish`` publishes the streaming port in ``host`` mode on a port the node picks (the
    control plane reaches it at the node's address); without it the session is reachable
    only on ``network`` as ``<service name>:<streaming_port>``. ``home_node`` pins the service
    to the node holding the user's home when homes are ``local`` volumes (a local volume
    exists on one node only); ``constraints`` are the operator's placement constraints.
    The template's command replaces the image's ``CMD`` (Swarm's ``Args``), as in plain mode.
    """
    image = objects.validate_image(spec.image)
    home_volume = objects.home_volume_name(spec.require_user()) if spec.persistent_home else None
    labels = objects.session_labels(session_id, spec, agent_id, home_volume=home_volume)
    if home_node:
        labels[LABEL_HOME_NODE] = home_node
    placement = list(constraints or [])
    if home_node and home_volume_driver == "local":
        placement.append(node_constraint(home_node))
    config: dict[str, Any] = {
        "image": image,
        "name": service_name(session_id),
        "labels": labels,
        "container_labels": dict(labels),
        "hostname": f"ss-{session_id[:12]}",
        "env": [
            f"{key}={value}"
            for key, value in {
                **spec.env,
                "STREAMSPACE_SESSION_ID": session_id,
                "STREAMSPACE_USER": spec.user,
                "STREAMSPACE_STREAMING_PORT": str(spec.streaming_port),
            }.items()
        ],
        "mounts": mounts(spec, home_mount_path, home_volume=home_volume, driver=home_volume_driver, agent_id=agent_id),
        "networks": [network],
        "mode": {"Replicated": {"Replicas": 1}},
        "restart_policy": {"Condition": "none", "MaxAttempts": 0},
        "init": True,
        "stop_grace_period": stop_timeout * NANO,
        "constraints": placement,
        "endpoint_spec": {
            "Mode": "vip",
            "Ports": [{"Protocol": "tcp", "TargetPort": spec.streaming_port, "PublishMode": "host"}] if publish else [],
        },
    }
    if spec.command:
        config["args"] = list(spec.command)
    resources: dict[str, int] = {}
    if spec.cpu_millicores:
        resources["NanoCPUs"] = spec.cpu_millicores * 1_000_000
    if spec.memory_mb:
        resources["MemoryBytes"] = spec.memory_mb * 1024 * 1024
    if resources:
        config["resources"] = {"Limits": resources}
    return config


def mounts(
    spec: SessionSpec, home_mount_path: str, *, home_volume: str | None, driver: str, agent_id: str
) -> list[dict[str, Any]]:
    """Swarm mount objects: the user's home (created on the node by ``driver`` with the
    owner's labels) and the template's named volumes."""
    result: list[dict[str, Any]] = []
    if home_volume:
        options: dict[str, Any] = {"Labels": objects.home_volume_labels(spec.user, agent_id)}
        if driver != "local":
            options["DriverConfig"] = {"Name": driver}
        result.append(
            {
                "Target": spec.home_mount_path or home_mount_path,
                "Source": home_volume,
                "Type": "volume",
                "ReadOnly": False,
                "VolumeOptions": options,
            }
        )
    for name, mount in objects.volumes(_without_home(spec)).items():
        result.append({"Target": mount["bind"], "Source": name, "Type": "volume", "ReadOnly": mount["mode"] == "ro"})
    return result


def _without_home(spec: SessionSpec) -> SessionSpec:
    """``spec`` without its home, so :func:`objects.volumes` lists the template's volumes only."""
    return msgspec.structs.replace(spec, persistent_home=False)


def replicas_of(service: dict[str, Any]) -> int:
    return int((((service.get("Spec") or {}).get("Mode") or {}).get("Replicated") or {}).get("Replicas") or 0)


def latest_task(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The service's newest task (the one that says what the session is doing)."""
    if not tasks:
        return None
    return max(tasks, key=lambda task: (task.get("CreatedAt") or "", (task.get("Version") or {}).get("Index", 0)))


def task_exit_code(task: dict[str, Any] | None) -> int | None:
    """The exit code of an ended task's container; None if it never ran or still runs."""
    if not task:
        return None
    status = task.get("Status") or {}
    if status.get("State") not in TASK_ENDED:
        return None
    container = status.get("ContainerStatus") or {}
    if not container.get("ContainerID"):
        return None  # rejected before a container existed (image missing, no suitable node)
    code = container.get("ExitCode")
    return code if isinstance(code, int) else None


def session_state(service: dict[str, Any], tasks: list[dict[str, Any]]) -> str:
    """Map a service and its tasks to a session state.

    Replicas 0 is a hibernated session. With replicas 1 the newest task decides: running;
    starting while Swarm allocates, pulls and starts it; ``failed`` once it ended (restart
    policy ``none`` means nothing replaces it), unless the service is being updated, when
    the replacement task may simply not exist yet.
    """
    if replicas_of(service) == 0:
        return "hibernated"
    task = latest_task(tasks)
    if task is None:
        return "starting"
    state = (task.get("Status") or {}).get("State", "")
    if state == "running":
        return "running"
    if state in TASK_STARTING:
        return "starting"
    updating = ((service.get("UpdateStatus") or {}).get("State") or "") in ("updating", "rollback_started")
    if state in TASK_ENDED and not updating:
        return "failed"
    return "starting"


def task_failure(task: dict[str, Any] | None) -> str:
    """One sentence saying why a task ended, from Swarm's own words (``Status.Err``)."""
    if not task:
        return "The session's service has no task."
    status = task.get("Status") or {}
    err = status.get("Err") or ""
    state = status.get("State", "")
    if state == "rejected":
        return f"Swarm could not start the session's task: {err or status.get('Message') or 'rejected'}."
    code = task_exit_code(task)
    if code is not None:
        text = describe_exit("container", code)
        return f"{text} Swarm: {err}" if err else text
    return f"The session's task ended ({state}{': ' + err if err else ''})."


def published_port(task: dict[str, Any] | None, streaming_port: int) -> int | None:
    """The host port a running task's streaming port is published on (``host`` mode)."""
    ports = (((task or {}).get("Status") or {}).get("PortStatus") or {}).get("Ports") or []
    for port in ports:
        if port.get("TargetPort") == streaming_port and port.get("PublishedPort"):
            return int(port["PublishedPort"])
    return None


def require_manager(info: dict[str, Any]) -> str:
    """The engine's Swarm node id; :class:`BackendError` unless it is an active manager."""
    swarm = info.get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active":
        raise BackendError(
            "STREAMSPACE_DOCKER_MODE=swarm needs a Swarm manager, but this Docker engine is not in a swarm "
            f"(state {swarm.get('LocalNodeState') or 'unknown'}); run `docker swarm init` or point DOCKER_HOST at a manager"
        )
    if not swarm.get("ControlAvailable"):
        raise BackendError(
            "STREAMSPACE_DOCKER_MODE=swarm needs a Swarm manager, but this engine is a worker; "
            "point DOCKER_HOST at a manager node"
        )
    return str(swarm.get("NodeID") or "")

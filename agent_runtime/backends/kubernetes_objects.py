"""Pure builders and readers for the Kubernetes backend's objects (kubespawner ``objects.py`` style).

No I/O here: these functions turn a session spec into Kubernetes manifests (plain dicts, as
the API's JSON) and read a session's state out of the objects the API returns, so both
directions are unit-tested as dicts.

Per session (``<name>`` = ``ss-<session_id>``): a Deployment of one replica (scaled to 0 to
hibernate: the pod template, the Service and the home stay, so a wake is a scale to 1), a
ClusterIP Service in front of the streaming port, a NetworkPolicy that admits only the
control plane and the agent, and, when the spec carries stream secrets, a Secret the pod
reads them from. Per user: the home PVC ``ss-home-<slug>-<digest>`` (:mod:`.homes`: one per
exact user name), reused by all their sessions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from agent_runtime.backends import homes
from agent_runtime.backends.base import BackendError, SessionSpec

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "streamspace"
COMPONENT = "app.kubernetes.io/component"
LABEL_SESSION = "streamspace.io/session-id"
LABEL_USER = "streamspace.io/user"  # the user's home key (a label value cannot hold any user name)
LABEL_TEMPLATE = "streamspace.io/template"
LABEL_AGENT = "streamspace.io/agent"
ANNOTATION_USER = "streamspace.io/user"  # the exact user name
ANNOTATION_PORT = "streamspace.io/streaming-port"
ANNOTATION_HOME = "streamspace.io/home"
GPU_RESOURCE = "nvidia.com/gpu"
# The waiting reasons of a container that will not get better by waiting: the session fails at
# once with a sentence naming what to fix. ErrImagePull is not here: kubelet retries it and
# says ImagePullBackOff seconds later.
FATAL_WAITING = {
    "ImagePullBackOff": "its image cannot be pulled",
    "InvalidImageName": "its image name is not valid",
    "ErrImageNeverPull": "its image is not on the node and the pull policy forbids pulling it",
    "CrashLoopBackOff": "its container keeps crashing",
    "CreateContainerConfigError": "its container cannot be configured",
    "CreateContainerError": "its container cannot be created",
}
HINTS = {
    "ImagePullBackOff": "Check the template's image name and the registry credentials (imagePullSecrets).",
    "InvalidImageName": "Fix the template's image name.",
    "ErrImageNeverPull": "Load the image onto the nodes or allow pulling.",
    "CrashLoopBackOff": "Check the session's log below and the template's command.",
    "CreateContainerConfigError": "Check the template's environment and volume mounts.",
    "CreateContainerError": "Check the template's command and volume mounts.",
    "Unschedulable": "Lower the session's CPU, memory or GPU request, or add capacity to the cluster.",
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?$")
_LABEL_VALUE_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")


def workload_name(session_id: str) -> str:
    """``ss-<session_id>``: the Deployment, Service, NetworkPolicy and Secret of a session."""
    name = f"ss-{session_id}"
    if not _DNS_LABEL.match(name):
        raise BackendError(f"session id {session_id!r} cannot name a Kubernetes object (lower-case a-z, 0-9, -)")
    return name


def home_claim_name(username: str) -> str:
    """``ss-home-<slug>-<digest>``: the user's home PVC, one per exact user name."""
    if not username:
        raise BackendError("spec is missing 'user' (the session owner's username)")
    return "ss-home-" + homes.home_key(username)


def label_value(text: str) -> str:
    """``text`` made a valid label value (63 characters of ``[A-Za-z0-9_.-]``, alphanumeric ends)."""
    return _LABEL_VALUE_UNSAFE.sub("-", text)[:63].strip("_.-")


def quantity(value: str, *, name: str) -> str:
    """Validate a Kubernetes quantity setting (``10Gi``, ``512Mi``, ``1``)."""
    if not _QUANTITY.match(value):
        raise BackendError(f"{name}={value!r} is not a Kubernetes quantity (examples: 10Gi, 512Mi)")
    return value


def selector(agent_id: str) -> str:
    """The label selector of every object this agent manages (inventory, watches)."""
    return f"{MANAGED_BY}={MANAGED_BY_VALUE},{LABEL_AGENT}={label_value(agent_id)}"


def session_labels(session_id: str, spec: SessionSpec, agent_id: str) -> dict[str, str]:
    labels = {
        MANAGED_BY: MANAGED_BY_VALUE,
        COMPONENT: "session",
        LABEL_SESSION: session_id,
        LABEL_AGENT: label_value(agent_id),
    }
    if spec.user:
        labels[LABEL_USER] = homes.home_key(spec.user)
    if spec.template:
        labels[LABEL_TEMPLATE] = label_value(spec.template)
    return labels


def _metadata(name: str, namespace: str, labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        meta["annotations"] = annotations
    return meta


def secret_values(spec: SessionSpec) -> dict[str, str]:
    """The session's stream secrets as pod env names → values (empty when the spec has none)."""
    return spec.stream_environment()


def secret_manifest(session_id: str, spec: SessionSpec, *, agent_id: str, namespace: str) -> dict | None:
    """The Secret holding the session's stream secrets, or None when the spec carries none."""
    values = secret_values(spec)
    if not values:
        return None
    labels = session_labels(session_id, spec, agent_id)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(workload_name(session_id), namespace, labels),
        "type": "Opaque",
        "stringData": values,
    }


def home_claim(
    username: str, *, agent_id: str, namespace: str, storage_class: str, size: str, access_mode: str
) -> dict:
    """The user's home PVC (kept across sessions; deleted only by a stop that asks for it)."""
    spec: dict[str, Any] = {"accessModes": [access_mode], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    labels = {MANAGED_BY: MANAGED_BY_VALUE, COMPONENT: "home", LABEL_USER: homes.home_key(username)}
    labels[LABEL_AGENT] = label_value(agent_id)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(home_claim_name(username), namespace, labels, {ANNOTATION_USER: username}),
        "spec": spec,
    }


def _resources(spec: SessionSpec) -> dict:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if spec.cpu_millicores:
        requests["cpu"] = limits["cpu"] = f"{spec.cpu_millicores}m"
    if spec.memory_mb:
        requests["memory"] = limits["memory"] = f"{spec.memory_mb}Mi"
    gpus = spec.gpu
    if gpus:  # extended resources: request must equal limit
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(gpus)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _env(spec: SessionSpec, name: str, home_path: str) -> list[dict]:
    env = [{"name": key, "value": str(value)} for key, value in sorted(spec.env.items())]
    env.append({"name": "HOME", "value": home_path})
    for var in sorted(secret_values(spec)):
        env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": name, "key": var}}})
    return env


def deployment_manifest(
    session_id: str,
    spec: SessionSpec,
    *,
    agent_id: str,
    namespace: str,
    home_claim_name: str | None,
    home_mount_path: str,
    shm_size: str,
    image_pull_secrets: list[str],
    replicas: int = 1,
    run_as_user: int = 1000,
) -> dict:
    """The session's Deployment: one pod, ``Recreate`` (a home PVC is ReadWriteOnce)."""
    if not spec.image:
        raise BackendError("spec is missing 'image' (the kubernetes backend runs images)")
    name = workload_name(session_id)
    labels = session_labels(session_id, spec, agent_id)
    home_path = spec.home_mount_path or home_mount_path
    annotations = {ANNOTATION_PORT: str(spec.streaming_port)}
    if spec.user:
        annotations[ANNOTATION_USER] = spec.user
    if home_claim_name:
        annotations[ANNOTATION_HOME] = home_claim_name
    if spec.shm_size_mb:  # the template's size wins over the backend's default
        shm_size = f"{spec.shm_size_mb}Mi"
    volumes: list[dict] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}}]
    mounts: list[dict] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if spec.read_only_root:  # what stays writable besides the home
        for volume, path in (("tmp", "/tmp"), ("run", "/run")):
            volumes.append({"name": volume, "emptyDir": {}})
            mounts.append({"name": volume, "mountPath": path})
    if home_claim_name:
        volumes.append({"name": "home", "persistentVolumeClaim": {"claimName": home_claim_name}})
        mounts.append({"name": "home", "mountPath": home_path})
    else:
        volumes.append({"name": "home", "emptyDir": {}})
        mounts.append({"name": "home", "mountPath": home_path})
    for index, mount in enumerate(spec.volume_mounts):
        volume = f"vol-{index}"
        volumes.append(
            {"name": volume, "persistentVolumeClaim": {"claimName": mount.name, "readOnly": mount.read_only}}
        )
        mounts.append({"name": volume, "mountPath": mount.mount_path, "readOnly": mount.read_only})
    container: dict[str, Any] = {
        "name": SESSION_CONTAINER,
        "image": spec.image,
        "ports": [{"name": "stream", "containerPort": spec.streaming_port, "protocol": "TCP"}],
        "env": _env(spec, name, home_path),
        "resources": _resources(spec),
        "volumeMounts": mounts,
        # TCP, not HTTP: a session with a stream secret answers 401 to an unauthenticated GET,
        # which an httpGet probe counts as a failure; the secret must not be written into the
        # pod spec for a probe header either.
        "readinessProbe": {
            "tcpSocket": {"port": spec.streaming_port},
            "periodSeconds": 2,
            "failureThreshold": 3,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if spec.read_only_root:
        container["securityContext"]["readOnlyRootFilesystem"] = True
    if spec.command:
        container["command"] = list(spec.command)
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": run_as_user,
            "runAsGroup": run_as_user,
            "fsGroup": run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": secret} for secret in image_pull_secrets]
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = list(spec.tolerations)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, namespace, labels, annotations),
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {LABEL_SESSION: session_id, MANAGED_BY: MANAGED_BY_VALUE}},
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
        },
    }


def service_manifest(session_id: str, spec: SessionSpec, *, agent_id: str, namespace: str) -> dict:
    """The ClusterIP Service ``ss-<session_id>`` in front of the streaming port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(workload_name(session_id), namespace, session_labels(session_id, spec, agent_id)),
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_SESSION: session_id, MANAGED_BY: MANAGED_BY_VALUE},
            "ports": [{"name": "stream", "port": spec.streaming_port, "targetPort": spec.streaming_port}],
        },
    }


def network_policy_manifest(
    session_id: str, spec: SessionSpec, *, agent_id: str, namespace: str, allowed_from: list[dict]
) -> dict:
    """Ingress to the session's pod only from ``allowed_from`` (the control plane and the agent
    pods); another session's pod is never among them."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(workload_name(session_id), namespace, session_labels(session_id, spec, agent_id)),
        "spec": {
            "podSelector": {"matchLabels": {LABEL_SESSION: session_id, MANAGED_BY: MANAGED_BY_VALUE}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": allowed_from, "ports": [{"protocol": "TCP", "port": spec.streaming_port}]}],
        },
    }


def parse_peers(text: str) -> list[dict]:
    """``allowed_from`` option: ``key=value,key=value;key=value`` → NetworkPolicy peers, one per
    ``;``-separated pod label set (pods in any namespace with those labels)."""
    peers = []
    for group in filter(None, (part.strip() for part in text.split(";"))):
        labels = {}
        for pair in group.split(","):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise BackendError(f"allowed_from: {pair!r} is not key=value")
            labels[key.strip()] = value.strip()
        peers.append({"namespaceSelector": {}, "podSelector": {"matchLabels": labels}})
    return peers


# --- reading state back ----------------------------------------------------------------------
def session_id_of(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_SESSION)


def streaming_port_of(deployment: Mapping[str, Any]) -> int:
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    try:
        return int(annotations.get(ANNOTATION_PORT, "8080"))
    except ValueError:
        return 8080


def pod_ready(pod: Mapping[str, Any]) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


SESSION_CONTAINER = "session"


def running_pod(pods: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The pod whose session container runs now (one can be exec'd into), if any: phase
    ``Running``, not being deleted, the container's state ``running``."""
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        for container in status.get("containerStatuses") or []:
            if container.get("name") == SESSION_CONTAINER and "running" in (container.get("state") or {}):
                return pod
    return None


def home_mount_of(pod: Mapping[str, Any], default: str) -> str:
    """Where the session container mounts its ``home`` volume (``default`` if it has none)."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == SESSION_CONTAINER:
            for mount in container.get("volumeMounts") or []:
                if mount.get("name") == "home":
                    return str(mount.get("mountPath") or default)
    return default


def _timestamp(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def pod_failure(pod: Mapping[str, Any], *, now: float | None = None, unschedulable_after: float = 60.0) -> dict | None:
    """Why ``pod`` will not run, or None while it runs or may still start.

    Returns ``{"reason", "description", "exit_code"}``: a fatal waiting reason of its
    container (:data:`FATAL_WAITING`), phase ``Failed``, or ``Unschedulable`` for longer than
    ``unschedulable_after`` seconds (a cluster autoscaler may add a node meanwhile).
    """
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason") or ""
        if reason in FATAL_WAITING:
            terminated = (container.get("lastState") or {}).get("terminated") or {}
            code = terminated.get("exitCode")
            detail = waiting.get("message") or ""
            text = f"The session's pod cannot run: {FATAL_WAITING[reason]} ({reason}"
            text += f", exit code {code})" if isinstance(code, int) else ")"
            text += f": {detail}" if detail else ""
            return {"reason": reason, "description": f"{text.rstrip('.')}. {HINTS[reason]}", "exit_code": code}
    if status.get("phase") == "Failed":
        code = None
        for container in status.get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if isinstance(terminated.get("exitCode"), int):
                code = terminated["exitCode"]
        why = status.get("message") or status.get("reason") or "its container ended"
        return {"reason": "Failed", "description": f"The session's pod failed: {why}.", "exit_code": code}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            since = _timestamp(condition.get("lastTransitionTime")) or _timestamp(
                (pod.get("metadata") or {}).get("creationTimestamp")
            )
            current = now if now is not None else datetime.now(UTC).timestamp()
            if since is None or current - since >= unschedulable_after:
                detail = condition.get("message") or "no node fits its requests"
                return {
                    "reason": "Unschedulable",
                    "description": f"No node can run the session: {detail.rstrip('.')}. {HINTS['Unschedulable']}",
                    "exit_code": None,
                }
    return None


def session_state(
    deployment: Mapping[str, Any] | None,
    pods: list[Mapping[str, Any]],
    *,
    now: float | None = None,
    unschedulable_after: float = 60.0,
) -> tuple[str, bool, dict | None]:
    """``(state, streaming_ready, failure)`` of a session from its Deployment and pods.

    No Deployment: ``stopped``. Zero replicas: ``hibernated``. Otherwise ``failed`` when a
    live pod cannot run (:func:`pod_failure`), else ``running``, ready when a pod is Ready.
    """
    if deployment is None:
        return "stopped", False, None
    if int((deployment.get("spec") or {}).get("replicas") or 0) == 0:
        return "hibernated", False, None
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    if any(pod_ready(p) for p in live):
        return "running", True, None
    for pod in live:
        failure = pod_failure(pod, now=now, unschedulable_after=unschedulable_after)
        if failure is not None:
            return "failed", False, failure
    return "running", False, None

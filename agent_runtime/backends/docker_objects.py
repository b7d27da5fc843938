"""Pure builders for the Docker backend's objects (kubespawner ``objects.py`` style).

No I/O here: these functions turn a session spec into the keyword arguments of the Docker
SDK, so they can be unit-tested as plain dicts.
"""

from __future__ import annotations

import re
from typing import Any

from agent_runtime.backends import homes
from agent_runtime.backends.base import BackendError, SessionSpec

LABEL_SESSION = "streamspace.session-id"
LABEL_USER = "streamspace.user"
LABEL_TEMPLATE = "streamspace.template"
LABEL_MANAGED_BY = "streamspace.managed-by"
LABEL_PORT = "streamspace.streaming-port"
LABEL_HOME = "streamspace.home-volume"
LABEL_HOME_LEGACY = "streamspace.home-legacy"  # on a home volume: the legacy volume holding the home
DEFAULT_NETWORK = "streamspace"
DEFAULT_HOME_MOUNT = "/home/user"

# The distribution reference grammar (distribution/reference/regexp.go), simplified:
# [domain/]path[:tag][@digest]. The first component is a domain only if it contains "." or ":"
# or is "localhost"; path components are lower-case.
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_DOMAIN = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
_VOLUME_SAFE = re.compile(r"[^a-zA-Z0-9_.-]+")


def container_name(session_id: str) -> str:
    return f"streamspace-{session_id}"


def home_volume_name(username: str) -> str:
    """``streamspace-home-<slug>-<digest>``: the user's own home volume, one per exact user
    name (:mod:`agent_runtime.backends.homes`)."""
    if not username:
        raise BackendError("spec is missing 'user' (the session owner's username)")
    return homes.docker_home_volume(username)


def home_volume_labels(username: str, agent_id: str, *, legacy: str | None = None) -> dict[str, str]:
    """Labels of a user's home volume: its exact owner, and (for a user who kept a home
    named by an earlier release) the legacy volume that holds the home."""
    labels = {LABEL_USER: username, LABEL_MANAGED_BY: agent_id}
    if legacy:
        labels[LABEL_HOME_LEGACY] = legacy
    return labels


def legacy_home_is_theirs(
    username: str,
    legacy: str,
    *,
    volume_labels: dict[str, str] | None,
    container_users: set[str],
    claimed_by: set[str],
) -> bool:
    """Whether the legacy volume ``legacy`` provably holds ``username``'s home.

    Its owner is read from the best evidence there is: the volume's own ``streamspace.user``
    label; else the ``streamspace.user`` labels of the containers that mount it as their
    home (sessions created before the upgrade); else its name, which names exactly one
    user (``streamspace-home-alice`` is ``alice``'s, never ``alice_``'s or ``_alice``'s).
    Every owner found must be ``username``, and no other user may have claimed it.
    """
    if claimed_by - {username}:
        return False
    if volume_labels and volume_labels.get(LABEL_USER):
        return volume_labels[LABEL_USER] == username
    if container_users:
        return container_users == {username}
    return homes.legacy_docker_owner(legacy) == username


def _valid_reference(image: str) -> bool:
    name, _, digest = image.partition("@")
    if digest and not _DIGEST.match(digest):
        return False
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.match(tag):
            return False
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        if not _DOMAIN.match(parts[0]):
            return False
        parts = parts[1:]
    return all(_COMPONENT.match(part) for part in parts)


def validate_image(image: str) -> str:
    if not image:
        raise BackendError("spec is missing 'image' (the docker backend runs a container image)")
    if len(image) > 255 or not _valid_reference(image):
        raise BackendError(f"{image!r} is not a valid container image reference")
    return image


def session_labels(
    session_id: str, spec: SessionSpec, agent_id: str, *, home_volume: str | None = None
) -> dict[str, str]:
    """A session container's labels; ``home_volume``: the home it mounts (default: the user's own)."""
    labels = {
        LABEL_SESSION: session_id,
        LABEL_USER: spec.user,
        LABEL_TEMPLATE: spec.template,
        LABEL_MANAGED_BY: agent_id,
        LABEL_PORT: str(spec.streaming_port),
    }
    if spec.persistent_home:
        labels[LABEL_HOME] = home_volume or home_volume_name(spec.require_user())
    return labels


def volumes(
    spec: SessionSpec, home_mount_path: str = DEFAULT_HOME_MOUNT, *, home_volume: str | None = None
) -> dict[str, dict[str, str]]:
    """Named volumes to mount: the user's home (only with ``persistent_home``; ``home_volume``,
    default the user's own) and the template's."""
    mounts: dict[str, dict[str, str]] = {}
    if spec.persistent_home:
        mounts[home_volume or home_volume_name(spec.require_user())] = {
            "bind": spec.home_mount_path or home_mount_path,
            "mode": "rw",
        }
    for mount in spec.volume_mounts:
        if not mount.mount_path.startswith("/"):
            raise BackendError(f"volume mount path {mount.mount_path!r} must be absolute")
        mounts[_VOLUME_SAFE.sub("_", mount.name)] = {
            "bind": mount.mount_path,
            "mode": "ro" if mount.read_only else "rw",
        }
    return mounts


def container_config(
    session_id: str,
    spec: SessionSpec,
    *,
    agent_id: str,
    network: str = DEFAULT_NETWORK,
    publish_host: str | None = None,
    home_mount_path: str = DEFAULT_HOME_MOUNT,
    home_volume: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.create`` (docker SDK) for one session.

    ``home_volume``: the home volume the backend resolved for the user (default: the user's
    own, :func:`home_volume_name`).

    ``publish_host`` publishes the session port on that host address with a random host port
    (the control plane then reaches it at ``publish_host:<port>``); ``None`` leaves it reachable
    only on ``network`` as ``<container name>:<streaming_port>``.
    """
    image = validate_image(spec.image)
    port_key = f"{spec.streaming_port}/tcp"
    config: dict[str, Any] = {
        "image": image,
        "name": container_name(session_id),
        "hostname": f"ss-{session_id[:12]}",
        "labels": session_labels(session_id, spec, agent_id, home_volume=home_volume),
        "environment": {
            **spec.env,
            "STREAMSPACE_SESSION_ID": session_id,
            "STREAMSPACE_USER": spec.user,
            "STREAMSPACE_STREAMING_PORT": str(spec.streaming_port),
            **spec.stream_environment(),
        },
        "network": network,
        "volumes": volumes(spec, home_mount_path, home_volume=home_volume),
        "detach": True,
        "init": True,  # reap zombies and forward SIGTERM, whatever the image's PID 1 is
        "restart_policy": {"Name": "no"},  # the agent decides what runs (hibernate = stopped)
        "ports": {port_key: (publish_host, None)} if publish_host else {},
    }
    config.update(hardening(spec, home_mount_path))
    if spec.shm_size_mb:
        config["shm_size"] = f"{spec.shm_size_mb}m"
    if spec.command:
        config["command"] = list(spec.command)
    if spec.cpu_millicores:
        config["nano_cpus"] = spec.cpu_millicores * 1_000_000
    if spec.memory_mb:
        config["mem_limit"] = f"{spec.memory_mb}m"
        config["memswap_limit"] = f"{spec.memory_mb}m"  # no swap beyond the limit
    return config


# Capabilities a session keeps (every other one is dropped): what an entrypoint that starts
# as root needs to prepare its user's files and switch to that user. An image that runs as
# its own non-root user has none of them in effect, and ``no-new-privileges`` stops any
# program in the container from gaining one (setuid binaries, file capabilities).
KEPT_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL")
# Writable scratch space of a container whose root file system is read-only.
SCRATCH_TMPFS = {"/tmp": "rw,nosuid,nodev,mode=1777", "/run": "rw,nosuid,nodev,mode=755"}


def hardening(spec: SessionSpec, home_mount_path: str = DEFAULT_HOME_MOUNT) -> dict[str, Any]:
    """The confinement every session container gets (docs/architecture.md §17): capabilities
    dropped but :data:`KEPT_CAPABILITIES`, ``no-new-privileges``, and with
    ``spec.read_only_root`` a read-only root file system with tmpfs scratch space (and a
    tmpfs home when the home is not a persistent volume)."""
    config: dict[str, Any] = {
        "cap_drop": ["ALL"],
        "cap_add": list(KEPT_CAPABILITIES),
        "security_opt": ["no-new-privileges:true"],
    }
    if spec.read_only_root:
        config["read_only"] = True
        tmpfs = dict(SCRATCH_TMPFS)
        if not spec.persistent_home:
            tmpfs[spec.home_mount_path or home_mount_path] = "rw,nosuid,nodev,mode=1777"
        config["tmpfs"] = tmpfs
    return config


def published_endpoint(attrs: dict[str, Any], streaming_port: int) -> str | None:
    """``host:port`` from a container's ``NetworkSettings.Ports`` (inspect output), if published."""
    bindings = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{streaming_port}/tcp") or []
    for binding in bindings:
        host, port = binding.get("HostIp") or "127.0.0.1", binding.get("HostPort")
        if port:
            if host in ("0.0.0.0", "::", ""):
                host = "127.0.0.1"
            return f"{host}:{port}"
    return None


def exit_code_of(attrs: dict[str, Any]) -> int | None:
    """A container's exit code (inspect output), None while it runs or if it never ran."""
    state = attrs.get("State") or {}
    if state.get("Status") != "exited" and not state.get("Dead"):
        return None
    code = state.get("ExitCode")
    return code if isinstance(code, int) else None


def state_of(attrs: dict[str, Any]) -> str:
    """Map Docker's container state to a session state."""
    status = (attrs.get("State") or {}).get("Status", "")
    if status in ("running", "restarting", "paused"):
        return "running"
    if status in ("created", "exited"):
        return "hibernated"
    if status == "removing":
        return "stopping"
    return "failed"

"""The backend contract (JupyterHub's Spawner, reduced to what a session needs).

Every method is idempotent per ``session_id``: the control plane re-sends commands until
they are acknowledged and the agent may be restarted at any moment, so

* ``start`` of a running session returns its status; of a stopped-but-existing workload
  starts it again; of a missing one creates it.
* ``stop`` removes the workload (the user's home is kept unless ``delete_home``); stopping
  a session that does not exist is a no-op that reports ``stopped``.
* ``hibernate`` scales the workload to zero and keeps everything needed to wake it;
  hibernating a hibernated session is a no-op; a session that does not exist raises
  :class:`BackendError` (there is nothing to keep).
* ``wake`` starts a hibernated workload; a running one is returned as is; a missing one is
  re-created from ``spec`` (wake carries the full start spec), so a home survives.
* ``status`` and ``inventory`` only observe. ``inventory`` lists the sessions this agent
  manages (including ones started before a restart) and never creates or deletes anything.

All methods return protocol :class:`~agent_runtime.protocol.InventoryItem` values.
``streaming_ready`` is true only once the session's port answers HTTP. Methods must not
block the event loop: blocking client libraries run in an executor.

**A dead workload is never reported as running.** Whatever ends a session's process,
container or pod (it exits at start, crashes hours later, is killed from outside, runs out
of memory), the backend

* says so within seconds, without being asked: it calls :meth:`Backend.workload_exited`
  from the platform's own notification (a child process's exit, Docker's event stream, a
  Kubernetes watch on the session's pods: a terminated container, ``CrashLoopBackOff``, a
  pod in phase ``Failed``), not from a slow poll. :meth:`watch` runs for the agent's
  lifetime to receive those notifications; the agent then checks :meth:`status` and
  reports the failure, so a notification may be a false alarm (a stop of its own) but a
  missing one leaves the failure to the agent's periodic check (one heartbeat interval);
* reports it in :meth:`status` and :meth:`inventory` as not ``running`` (``failed``, or,
  where the platform cannot tell a crash from a stop, the state of a stopped workload, with
  ``exit_code`` set where known);
* tells how it ended in :meth:`exit_info`: the exit status (a process's exit code, or
  128 + N for signal N, as shells and Docker write it; a container's ``ExitCode``; a pod's
  ``lastState.terminated.exitCode``), a sentence a user understands, and the tail of the
  workload's output (a process's stdout and stderr, a container's log, a pod's log and
  events), bounded and masked with :func:`agent_runtime.logtail.tail`.

**Progress.** While ``start`` and ``wake`` run, a backend reports each step it takes with
:meth:`Backend.report_step` (the names are in :mod:`agent_runtime.protocol`: ``image`` for
"present" or "pulling", ``workload`` for creating and starting the container, pod or
process); the agent adds the steps that follow (waiting for the stream, ready), times them
and sends them to the control plane.

**Fencing.** ``start`` and ``wake`` call :meth:`Backend.require_mandate` immediately before
each side-effecting call (create, start, scale) and check :meth:`Backend.holds_mandate` right
after it returns. A backend whose agent lost the leader's mandate meanwhile undoes only what
that call did, identified by what only it knows (the id the platform returned to its create,
the platform's word that its call started the workload), never by the session's
deterministic name, and raises :class:`MandateLost`: the replica that leads now may have
created, adopted, stopped or hibernated the same session's workload meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal as signal_module
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

import msgspec

from agent_runtime import protocol
from agent_runtime.backends.homefiles import HomeEntry, HomeFile, HomeFilesUnsupported
from agent_runtime.config import LeaseConfig
from agent_runtime.protocol import Capacity, InventoryItem

MAX_SHM_MB = 65536  # the largest /dev/shm a spec may ask for (64 GiB)


class BackendError(Exception):
    """A command the backend cannot carry out; the message goes to the user as is."""


class MandateLost(BackendError):
    """The agent stopped leading around a side-effecting step of a start or wake, and the
    backend undid what that step did. The message starts with ``not_leader``: the control
    plane then hands the command to whoever leads now (docs/architecture.md §6.5)."""


class WorkloadExit(msgspec.Struct, frozen=True):
    """How a session's workload ended (:meth:`Backend.exit_info`).

    ``exit_code``: the exit status (128 + N for signal N), None when the backend cannot know
    it (a process that was not its child); ``description``: one sentence for the user
    ("The process exited with code 3."); ``log_tail``: the end of its output, bounded and
    masked (:func:`agent_runtime.logtail.tail`).
    """

    exit_code: int | None = None
    description: str = "The session's workload ended."
    log_tail: str = ""


class BackendListener(Protocol):
    """Who hears what a backend reports without being asked (the agent's command executor)."""

    async def step(self, session_id: str, step: str, label: str, state: str) -> None:
        """A launch of ``session_id`` reached ``step`` (``state``: active, done or failed)."""

    def exited(self, session_id: str, exit_code: int | None) -> None:
        """``session_id``'s workload ended (or may have: the listener checks ``status``).

        Called on the event loop's thread; must not block.
        """

    def leading(self) -> bool:
        """Whether this replica holds its leader's mandate at this instant (a side-effecting
        step of a launch is taken only while it does)."""


class _NobodyListens:
    async def step(self, session_id: str, step: str, label: str, state: str) -> None:
        return None

    def exited(self, session_id: str, exit_code: int | None) -> None:
        return None

    def leading(self) -> bool:
        return True


#: Test-only: the name of a fenced step (``create``, ``start``) at which the agent process stops
#: itself (SIGSTOP) once, right after the mandate check and before the call, so a test can hold
#: a leader in that window while another replica takes over. Unset in production.
PAUSE_AT_ENV = "STREAMSPACE_AGENT_TEST_PAUSE_AT"
_paused: set[str] = set()


def _test_pause(step: str) -> None:
    if os.environ.get(PAUSE_AT_ENV) == step and step not in _paused:
        _paused.add(step)
        os.kill(os.getpid(), signal_module.SIGSTOP)


def signal_exit_code(returncode: int) -> int:
    """A process's exit status as shells and Docker write it: a signal N becomes 128 + N
    (Python's ``returncode`` is -N for a signal)."""
    return 128 - returncode if returncode < 0 else returncode


def describe_exit(noun: str, exit_code: int | None, *, oom: bool = False) -> str:
    """One sentence saying how a workload ended ("The process was killed by signal 9 (SIGKILL).")."""
    if oom:
        return f"The {noun} was killed: it ran out of memory (exit code {exit_code})."
    if exit_code is None:
        return f"The {noun} ended (its exit status is unknown)."
    if exit_code > 128 and exit_code - 128 < 65:
        number = exit_code - 128
        try:
            name = f", {signal_module.Signals(number).name}"
        except ValueError:
            name = ""
        return f"The {noun} was killed by signal {number}{name} (exit code {exit_code})."
    return f"The {noun} exited with code {exit_code}."


class VolumeMount(msgspec.Struct, forbid_unknown_fields=False):
    name: str
    mount_path: str
    read_only: bool = False


class SessionSpec(msgspec.Struct, forbid_unknown_fields=False):
    """What a command's ``spec`` may hold (``sessions_app.services.start_spec`` writes it)."""

    image: str = ""
    command: list[str] = msgspec.field(default_factory=list)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    cpu_millicores: int = 0
    memory_mb: int = 0
    persistent_home: bool = True
    streaming_port: int = 8080
    volume_mounts: list[VolumeMount] = msgspec.field(default_factory=list)
    user: str = ""
    template: str = ""
    delete_home: bool = False
    # Where the user's home is mounted in the container ("" = the backend's default).
    home_mount_path: str = ""
    # The size of the container's /dev/shm in MiB (0 = the engine's default).
    shm_size_mb: int = 0
    # The container's root file system is mounted read-only (writable: the home, /tmp, /run).
    read_only_root: bool = False
    # The per-session stream secrets (``agent_runtime.protocol.SPEC_STREAM_SECRET``); "" = none.
    stream_secret: str = ""
    stream_view_secret: str = ""
    # Scheduling hints for cluster backends (kubernetes): GPUs to request (``nvidia.com/gpu``),
    # the pod's node selector and tolerations (Kubernetes' own JSON shapes).
    gpu: int = 0
    node_selector: dict[str, str] = msgspec.field(default_factory=dict)
    tolerations: list[dict[str, Any]] = msgspec.field(default_factory=list)

    def __repr__(self) -> str:  # a spec may be logged: never with its secrets
        return f"SessionSpec({protocol.redacted_spec(msgspec.to_builtins(self))!r})"

    def stream_environment(self) -> dict[str, str]:
        """The variables that tell the workload its stream secrets (none when it has none)."""
        env = {}
        if self.stream_secret:
            env[protocol.ENV_STREAM_SECRET] = self.stream_secret
        if self.stream_view_secret:
            env[protocol.ENV_STREAM_VIEW_SECRET] = self.stream_view_secret
        return env

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> SessionSpec:
        """Validate a command's spec; bad types raise :class:`BackendError` naming the field."""
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise BackendError("spec must be an object")
        try:
            spec = msgspec.convert(dict(raw), cls)
        except msgspec.ValidationError as exc:
            raise BackendError(f"invalid spec: {exc}") from None
        if spec.cpu_millicores < 0 or spec.memory_mb < 0:
            raise BackendError("invalid spec: cpu_millicores and memory_mb must not be negative")
        if spec.gpu < 0:
            raise BackendError("invalid spec: gpu must not be negative")
        if not 1 <= spec.streaming_port <= 65535:
            raise BackendError("invalid spec: streaming_port must be between 1 and 65535")
        if not 0 <= spec.shm_size_mb <= MAX_SHM_MB:
            raise BackendError(f"invalid spec: shm_size_mb must be between 0 and {MAX_SHM_MB}")
        if spec.home_mount_path and (not spec.home_mount_path.startswith("/") or spec.home_mount_path == "/"):
            raise BackendError("invalid spec: home_mount_path must be an absolute path below /")
        return spec

    def require_user(self) -> str:
        if not self.user:
            raise BackendError("spec is missing 'user' (the session owner's username)")
        return self.user


class Backend(ABC):
    """Runs session workloads on one platform. Subclasses set ``platform``."""

    platform: ClassVar[str]

    def __init__(self, *, agent_id: str, data_dir: Path, options: Mapping[str, str] | None = None):
        self.agent_id = agent_id
        self.data_dir = Path(data_dir)
        self.options = dict(options or {})
        self.listener: BackendListener = _NobodyListens()

    # --- what the backend reports without being asked -------------------------------------
    def listen(self, listener: BackendListener) -> None:
        """Send progress steps and exit notifications to ``listener`` (the agent does this once)."""
        self.listener = listener

    async def report_step(self, session_id: str, step: str, label: str, state: str = "active") -> None:
        """Tell the agent that ``session_id``'s launch reached ``step`` (see the module docstring)."""
        await self.listener.step(session_id, step, label, state)

    def workload_exited(self, session_id: str, exit_code: int | None = None) -> None:
        """Tell the agent that ``session_id``'s workload ended; call on the event loop's thread."""
        self.listener.exited(session_id, exit_code)

    # --- fencing a launch (docs/architecture.md §6.5) ----------------------------------------
    def holds_mandate(self) -> bool:
        """Whether the agent leads at this instant (always, for an agent without HA)."""
        return self.listener.leading()

    def require_mandate(self, session_id: str, step: str) -> None:
        """Raise :class:`MandateLost` unless the agent leads at this instant.

        Called immediately before each side-effecting call of a start or wake (``step``: what
        the call does, e.g. ``create``); the backend checks :meth:`holds_mandate` again right
        after the call returns and undoes what the call did if the mandate ended meanwhile.
        """
        if not self.holds_mandate():
            raise MandateLost(f"not_leader: leadership lost before the {step} step of session {session_id}")
        _test_pause(step)

    async def prepare(self, lease: LeaseConfig) -> LeaseConfig:
        """Check the platform before the agent connects and return the lease to elect on.

        Raise :class:`BackendError` to refuse to run (the agent exits with the message); a
        backend may scope the lease to what its replicas share (the Docker backend: the
        daemon). The default accepts and returns ``lease`` unchanged.
        """
        return lease

    async def watch(self) -> None:  # noqa: B027  (optional hook)
        """Receive the platform's notifications of ended workloads for as long as the agent
        runs, calling :meth:`workload_exited` for each (cancelled at shutdown).

        A backend without a push mechanism returns at once; the agent then finds dead
        workloads by its periodic check only.
        """

    async def exit_info(self, session_id: str) -> WorkloadExit:
        """How ``session_id``'s workload ended: exit status, a sentence, the tail of its output.

        Asked once a workload is no longer running; a backend that keeps no record says what
        it can (the default: nothing beyond "it ended").
        """
        return WorkloadExit()

    @abstractmethod
    async def start(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        """Create (or start again) the session's workload and return its status."""

    @abstractmethod
    async def stop(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        """Remove the workload; keep the home unless ``spec.delete_home``. Returns state ``stopped``."""

    @abstractmethod
    async def hibernate(self, session_id: str) -> InventoryItem:
        """Scale to zero keeping the workload's definition and home. Returns state ``hibernated``."""

    @abstractmethod
    async def wake(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        """Start a hibernated workload again (re-create it from ``spec`` if it vanished)."""

    @abstractmethod
    async def status(self, session_id: str) -> InventoryItem:
        """Observe one session; a session this backend does not have reports ``stopped``."""

    @abstractmethod
    async def inventory(self) -> list[InventoryItem]:
        """Every session this agent manages on this platform, without changing anything."""

    async def until_answering(self, session_id: str, item: InventoryItem, within: float) -> None:
        """Return when ``session_id``'s workload (last seen as ``item``: running, not
        answering) may have begun to answer, at the latest after ``within`` seconds.

        The agent's readiness watcher waits here between two :meth:`status` probes. This
        waits ``within``; a backend that can see the workload's port open at little cost
        returns as soon as it does, so the probe that finds it ready follows at once.
        """
        await asyncio.sleep(within)

    async def capacity(self) -> Capacity:
        """What this host offers (reported in ``register`` and heartbeats)."""
        return host_capacity()

    async def close(self) -> None:  # noqa: B027  (optional hook)
        """Release clients and executors; running sessions keep running."""

    # --- files in the session's home (docs/architecture.md §23; rules in .homefiles) --------
    # ``path`` is what :func:`.homefiles.parse_home_path` returned; the backend resolves it
    # inside the session's own file system and refuses an escape with ``HomePathEscape``.
    # Bytes stream in ``homefiles.CHUNK`` pieces: no method holds a whole file in memory.
    # A session whose workload is not running raises ``HomeNotAvailable``; one this backend
    # does not know, ``HomePathNotFound``. A backend without file support keeps these defaults
    # (the control plane answers 501 ``files_unsupported``).
    async def home_stat(self, session_id: str, path: tuple[str, ...]) -> HomeEntry:
        """The entry ``path`` names, links followed (its ``name`` is the last component)."""
        raise HomeFilesUnsupported(f"The {self.platform} backend does not give access to session files.")

    async def home_list(self, session_id: str, path: tuple[str, ...]) -> list[HomeEntry]:
        """The entries of the directory ``path`` (links listed as ``link``, not followed), at
        most ``homefiles.MAX_LIST_ENTRIES``; ``HomePathConflict`` if it is not a directory."""
        raise HomeFilesUnsupported(f"The {self.platform} backend does not give access to session files.")

    async def home_read(self, session_id: str, path: tuple[str, ...]) -> HomeFile:
        """Open the regular file ``path`` for streaming; ``HomePathConflict`` for a directory."""
        raise HomeFilesUnsupported(f"The {self.platform} backend does not give access to session files.")

    async def home_write(
        self, session_id: str, path: tuple[str, ...], size: int, chunks: AsyncIterator[bytes]
    ) -> HomeEntry:
        """Write exactly ``size`` bytes from ``chunks`` to ``path``, replacing a file there.

        The file appears whole or not at all (written beside it, then renamed); it belongs to
        the home's owner. Fewer bytes than ``size`` raise ``HomeUploadIncomplete`` and leave
        nothing behind; a directory at ``path`` is a ``HomePathConflict``; the parent must
        exist (``HomePathNotFound``).
        """
        raise HomeFilesUnsupported(f"The {self.platform} backend does not give access to session files.")

    async def home_delete(self, session_id: str, path: tuple[str, ...]) -> None:
        """Remove the entry ``path`` (a directory with its contents; a link, not its target)."""
        raise HomeFilesUnsupported(f"The {self.platform} backend does not give access to session files.")


def host_capacity(max_sessions: int = 0) -> Capacity:
    memory_mb = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    memory_mb = int(line.split()[1]) // 1024
                    break
    except OSError:
        pass
    return Capacity(cpu_millicores=(os.cpu_count() or 1) * 1000, memory_mb=memory_mb, sessions=max_sessions)


async def http_answers(host: str, port: int, *, timeout: float = 1.0, path: str = "/") -> bool:
    """True when ``host:port`` answers an HTTP request with any status line."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: streamspace-agent\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.startswith(b"HTTP/")
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

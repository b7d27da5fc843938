"""Local backend: each session is a child process on this host (``make run``, development).

A template's ``command`` is an argv list; ``{python}`` becomes this interpreter, ``{port}``
a free loopback port (not one of the other sessions') and ``{home}`` the session's home
directory (per user under ``<data dir>/homes/`` when ``persistent_home``, else per session
and removed on stop).

A user's home is ``homes/<slug>-<digest>`` (:mod:`.homes`: one per exact user name). Earlier
releases named it ``homes/<cleaned name>``, shared by users whose names differ only by
``_ . - @ +``. Such a legacy directory is renamed to the new name for the one user it
provably belongs to (the sessions recorded in the state file that use it are all that
user's; with none recorded, its name is exactly that user's name) and handed to no one
else; the rename makes the decision final. See docs/persistent-homes.md.

Every session runs in its own process group (``start_new_session``) so that terminate
reaches its children too, and outlives the agent: a small JSON state file records pids
(with their kernel start time, so a recycled pid is never mistaken for a session), and a
restarted agent reports them in its inventory instead of starting them again.

A session's process is watched: the exit of a child is noticed at once (its reaper task),
the exit of a process adopted after an agent restart through a pidfd (:meth:`watch`), and
either is reported to the agent (:meth:`Backend.workload_exited`) with the exit status
where it is known (children only) and the tail of the session's output file.

Sessions do not inherit the agent's environment and, where the agent runs as root, do not
run as root (:mod:`.local_session`: option ``session_user``, ``--session-user``, env
``STREAMSPACE_LOCAL_SESSION_USER``).

CPU and memory limits are not enforced here; use the docker or kubernetes backend for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import msgspec

from agent_runtime import desktop
from agent_runtime.backends import homes, listening, local_session
from agent_runtime.backends.base import (
    Backend,
    BackendError,
    MandateLost,
    SessionSpec,
    WorkloadExit,
    describe_exit,
    host_capacity,
    http_answers,
    signal_exit_code,
)
from agent_runtime.backends.homefiles import HomeEntry, HomeFile, HomeNotAvailable, HomePathNotFound
from agent_runtime.backends.local_files import LocalHome
from agent_runtime.logtail import file_tail
from agent_runtime.protocol import FEATURE_DESKTOP, SPEC_SECRET_KEYS, STEP_WORKLOAD, Capacity, InventoryItem

log = logging.getLogger(__name__)

TERMINATE_GRACE_S = 5.0
REAP_WAIT_S = 2.0  # how long exit_info waits for a child that is exiting to be reaped
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(value: str) -> str:
    """A file-system-safe form of a session id (lossy: never used for user names, see
    :func:`.homes.home_key`)."""
    cleaned = _SAFE_NAME.sub("_", value).strip("._") or "_"
    return cleaned[:64]


def substitute(argv: list[str], *, port: int, home: Path) -> list[str]:
    """Fill ``{python}``, ``{port}`` and ``{home}`` into a template command (pure)."""
    values = {"{python}": sys.executable, "{port}": str(port), "{home}": str(home)}
    result = []
    for arg in argv:
        for key, value in values.items():
            arg = arg.replace(key, value)
        result.append(arg)
    return result


FREE_PORT_TRIES = 64


def free_port(preferred: int | None = None, *, taken: Collection[int] = ()) -> int:
    """A loopback TCP port nobody listens on and not in ``taken`` (``preferred`` if it
    qualifies). ``taken``: the ports of this backend's other sessions; a session that is
    starting has not bound its port yet, and the kernel may offer that port again."""
    candidates = [preferred] if preferred and preferred not in taken else []
    for candidate in [*candidates, *[0] * FREE_PORT_TRIES]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            port = sock.getsockname()[1]
        if port not in taken:
            return port
    raise BackendError("no free loopback port")


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may contain spaces
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


class LocalBackend(Backend):
    platform = "local"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.root = self.data_dir / "local-backend"
        self.state_path = self.root / "state.json"
        self.logs_dir = self.root / "logs"
        self.homes_dir = self.data_dir / "homes"
        self.session_user = local_session.resolve_session_user(self.options.get("session_user"))
        self._lock = asyncio.Lock()
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._exit_codes: dict[str, tuple[int, int]] = {}  # session_id -> (pid, exit status) of children
        self._terminating: set[int] = set()  # pids this backend is ending: their exit is no news
        self._listen_watch = listening.ListenWatch()

    # --- state file ---------------------------------------------------------------------
    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.exception(
                "local backend state file is unreadable; starting empty", extra={"path": str(self.state_path)}
            )
            return {}

    def _save(self, state: dict[str, dict[str, Any]]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.state_path)

    # --- helpers ------------------------------------------------------------------------
    def _home_for(self, session_id: str, spec: SessionSpec, state: dict[str, dict[str, Any]]) -> Path:
        if spec.persistent_home:
            return self._user_home(spec.require_user(), state)
        return self.root / "sessions" / safe_name(session_id) / "home"

    def _user_home(self, username: str, state: dict[str, dict[str, Any]]) -> Path:
        """``homes/<slug>-<digest>``; a legacy ``homes/<cleaned name>`` that is provably the
        user's is renamed to it first (see the module docstring)."""
        home = self.homes_dir / homes.home_key(username)
        if home.exists():
            return home
        legacy = self.homes_dir / homes.legacy_local_dir(username)
        if not legacy.is_dir() or legacy == home:
            return home
        users = {r.get("spec", {}).get("user", "") for r in state.values() if r.get("home") == str(legacy)}
        if (users or {homes.legacy_local_dir(username)}) != {username}:
            return home  # another user's, or shared before: not handed to anyone
        if any(self._alive(r) for r in state.values() if r.get("home") == str(legacy)):
            return legacy  # a session runs in it now: renamed at a later start
        legacy.rename(home)
        for record in state.values():
            if record.get("home") == str(legacy):
                record["home"] = str(home)
        log.info("legacy home renamed", extra={"user": username, "home": str(home)})
        return home

    @staticmethod
    def _alive(record: dict[str, Any]) -> bool:
        """Whether the record's process runs. A process that had already exited when it was
        recorded (no start time) never runs, whatever its recycled pid does later."""
        pid, started = record.get("pid"), record.get("pid_start")
        return bool(pid) and started is not None and process_start_time(pid) == started

    def _exit_code(self, session_id: str, record: dict[str, Any]) -> int | None:
        known = self._exit_codes.get(session_id)
        return known[1] if known is not None and known[0] == record.get("pid") else None

    async def _item(self, session_id: str, record: dict[str, Any] | None) -> InventoryItem:
        if record is None:
            return InventoryItem(session_id=session_id, state="stopped")
        port = record.get("port")
        if record["state"] == "hibernated":
            return InventoryItem(session_id=session_id, state="hibernated", streaming_port=port)
        if not self._alive(record):
            return InventoryItem(
                session_id=session_id,
                state="failed",
                streaming_port=port,
                exit_code=self._exit_code(session_id, record),
            )
        ready = await http_answers("127.0.0.1", port, timeout=1.0)
        return InventoryItem(
            session_id=session_id,
            state="running",
            streaming_ready=ready,
            streaming_port=port,
            endpoint=f"127.0.0.1:{port}",
        )

    async def _spawn(
        self, session_id: str, spec: SessionSpec, preferred_port: int | None, state: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        if not spec.command:
            raise BackendError("the local backend runs a template's 'command' (an argv list), and this one has none")
        user = self.session_user
        home = self._home_for(session_id, spec, state)
        home.mkdir(parents=True, exist_ok=True)
        local_session.give_home(home, user)
        taken = {r["port"] for sid, r in state.items() if sid != session_id and r.get("port")}
        port = free_port(preferred_port, taken=taken)
        argv = substitute(spec.command, port=port, home=home)
        env = local_session.session_environment(
            os.environ,
            spec.env,
            home=home,
            port=port,
            session_id=session_id,
            user=user,
            stream=spec.stream_environment(),
        )
        _check_reachable(argv[0], home, env, user)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.logs_dir / f"{safe_name(session_id)}.log"
        with open(log_path, "ab") as log_file:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=home,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,  # own process group: terminate reaches its children
                    **_switch_to(user),
                )
            except OSError as exc:
                raise BackendError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
        self._children[proc.pid] = proc
        asyncio.get_running_loop().create_task(self._reap(session_id, proc))
        log.info("session process started", extra={"session_id": session_id, "pid": proc.pid, "port": port})
        return {
            "pid": proc.pid,
            "pid_start": process_start_time(proc.pid),
            "port": port,
            "home": str(home),
            "log": str(log_path),
            "state": "running",
            "spec": _spec_dict(spec),
            "started_at": time.time(),
        }

    async def _reap(self, session_id: str, proc: asyncio.subprocess.Process) -> None:
        """Wait for a child to exit, keep its exit status and report the exit (unless this
        backend ended it: a stop or a hibernation)."""
        code = signal_exit_code(await proc.wait())
        self._children.pop(proc.pid, None)
        self._exit_codes[session_id] = (proc.pid, code)
        expected = proc.pid in self._terminating
        self._terminating.discard(proc.pid)
        log.info(
            "session process exited",
            extra={"session_id": session_id, "pid": proc.pid, "exit_code": code, "expected": expected},
        )
        if not expected:
            self.workload_exited(session_id, code)

    async def _terminate(self, record: dict[str, Any]) -> None:
        if not self._alive(record):
            return
        pid = record["pid"]
        self._terminating.add(pid)
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + TERMINATE_GRACE_S
        while time.monotonic() < deadline:
            child = self._children.get(pid)
            if child is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(child.wait()), 0.05)
            else:
                await asyncio.sleep(0.05)
            if not self._alive(record):
                break
        _signal_group(pid, signal.SIGKILL)  # stragglers in the group, or the leader itself
        deadline = time.monotonic() + 2.0
        while self._alive(record) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    # --- contract -----------------------------------------------------------------------
    async def capacity(self) -> Capacity:
        """The host's size, and ``desktop`` among the features only when every program a
        desktop session needs is installed (:func:`agent_runtime.desktop.missing_dependencies`)."""
        capacity = host_capacity()
        capacity.features = [] if desktop.missing_dependencies() else [FEATURE_DESKTOP]
        return capacity

    async def start(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        async with self._lock:
            state = self._load()
            record = state.get(session_id)
            if record is None or record["state"] != "running" or not self._alive(record):
                preferred = record.get("port") if record else None
                await self.report_step(session_id, STEP_WORKLOAD, "Starting the process")
                self.require_mandate(session_id, "start")
                spawned = await self._spawn(session_id, spec, preferred, state)
                if not self.holds_mandate():  # deposed meanwhile: end the process this call spawned (its pid)
                    await self._terminate(spawned)
                    raise MandateLost(f"not_leader: leadership lost during the start step of session {session_id}")
                record = state[session_id] = spawned
                self._save(state)
                await self.report_step(session_id, STEP_WORKLOAD, f"Process started (pid {record['pid']})", "done")
        # Observed outside the lock (the session's own commands run one at a time): other
        # sessions' starts do not wait for this probe.
        return await self._item(session_id, record)

    async def wake(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        return await self.start(session_id, spec)

    async def hibernate(self, session_id: str) -> InventoryItem:
        async with self._lock:
            state = self._load()
            record = state.get(session_id)
            if record is None:
                raise BackendError(f"session {session_id} does not exist on this agent")
            await self._terminate(record)
            record["state"] = "hibernated"
            self._save(state)
            return await self._item(session_id, record)

    async def stop(self, session_id: str, spec: SessionSpec) -> InventoryItem:
        async with self._lock:
            state = self._load()
            record = state.pop(session_id, None)
            if record is not None:
                await self._terminate(record)
                session_dir = self.root / "sessions" / safe_name(session_id)
                shutil.rmtree(session_dir, ignore_errors=True)
                if spec.delete_home and record.get("home"):
                    shutil.rmtree(record["home"], ignore_errors=True)
                self._save(state)
            return InventoryItem(session_id=session_id, state="stopped")

    async def status(self, session_id: str) -> InventoryItem:
        return await self._item(session_id, self._load().get(session_id))

    async def until_answering(self, session_id: str, item: InventoryItem, within: float) -> None:
        """Returns as soon as the session's port begins to listen (checked every
        :data:`~.listening.LISTEN_POLL_S`); a port that listens already (the server is up
        and its HTTP answer is late) or none waits ``within``."""
        port = item.streaming_port
        if port is None or listening.accepts(port):
            await asyncio.sleep(within)
            return
        await self._listen_watch.wait(port, within)

    async def inventory(self) -> list[InventoryItem]:
        state = self._load()
        return list(await asyncio.gather(*(self._item(sid, record) for sid, record in sorted(state.items()))))

    async def exit_info(self, session_id: str) -> WorkloadExit:
        record = self._load().get(session_id)
        if record is None:
            return WorkloadExit(description="The session's process is gone.")
        child = self._children.get(record.get("pid") or 0)
        if child is not None:  # exiting now: its status is a moment away
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.wait()), REAP_WAIT_S)
            await asyncio.sleep(0)  # let the reaper record it
        code = self._exit_code(session_id, record)
        tail = file_tail(record["log"]) if record.get("log") else ""
        return WorkloadExit(exit_code=code, description=describe_exit("process", code), log_tail=tail)

    async def watch(self) -> None:
        """Notice the exit of sessions' processes that are not this agent's children (started
        before it restarted) through a pidfd each; children are watched by their reapers."""
        loop = asyncio.get_running_loop()
        watched: dict[int, str] = {}  # pidfd -> session_id

        def ended(fd: int) -> None:
            loop.remove_reader(fd)
            os.close(fd)
            self.workload_exited(watched.pop(fd), None)

        try:
            for session_id, record in self._load().items():
                pid = record.get("pid") or 0
                if record.get("state") != "running" or pid in self._children or not self._alive(record):
                    continue
                try:
                    fd = os.pidfd_open(pid)
                except (AttributeError, OSError) as exc:  # no pidfd here: the periodic check finds it
                    log.info("cannot watch an adopted session process", extra={"pid": pid, "error": str(exc)})
                    continue
                watched[fd] = session_id
                loop.add_reader(fd, ended, fd)
            await asyncio.Event().wait()
        finally:
            for fd in watched:
                loop.remove_reader(fd)
                os.close(fd)

    # --- files in the home (§23) ----------------------------------------------------------
    def _session_home(self, session_id: str) -> LocalHome:
        """The running session's home (its process must run: the same rule on every backend)."""
        record = self._load().get(session_id)
        if record is None or not record.get("home"):
            raise HomePathNotFound("This agent has no such session.")
        if record.get("state") != "running" or not self._alive(record):
            raise HomeNotAvailable("The session is not running.")
        return LocalHome(Path(record["home"]))

    async def home_stat(self, session_id: str, path: tuple[str, ...]) -> HomeEntry:
        return await self._session_home(session_id).stat(path)

    async def home_list(self, session_id: str, path: tuple[str, ...]) -> list[HomeEntry]:
        return await self._session_home(session_id).list(path)

    async def home_read(self, session_id: str, path: tuple[str, ...]) -> HomeFile:
        return await self._session_home(session_id).read(path)

    async def home_write(self, session_id: str, path: tuple[str, ...], size: int, chunks: Any) -> HomeEntry:
        return await self._session_home(session_id).write(path, size, chunks)

    async def home_delete(self, session_id: str, path: tuple[str, ...]) -> None:
        await self._session_home(session_id).delete(path)


def _switch_to(user: local_session.SessionUser) -> dict[str, Any]:
    """``subprocess`` arguments that start the session as ``user`` (none when no switch)."""
    if not user.switch:
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": []}


def _check_reachable(program: str, home: Path, env: dict[str, str], user: local_session.SessionUser) -> None:
    """Refuse clearly, before starting, what the session user could not reach."""
    blocked = local_session.unreachable(home, user)
    if blocked is not None:
        raise BackendError(
            f"the session user {user.name} cannot reach its home {home}: {blocked} is not searchable by it; "
            "make the agent's data directory reachable (o+x on its parents) or set --session-user"
        )
    path = shutil.which(program, path=env.get("PATH")) if os.sep not in program else program
    blocked = local_session.unreachable(Path(path), user, execute=True) if path else None
    if blocked is not None:
        raise BackendError(
            f"the session user {user.name} cannot run {program}: {blocked} is not accessible to it; "
            "install the session's programs where that user can run them or set --session-user"
        )


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _spec_dict(spec: SessionSpec) -> dict[str, Any]:
    """The spec as the state file keeps it: without the stream secrets (they live only in
    the session process's environment)."""
    return {k: v for k, v in msgspec.to_builtins(spec).items() if k not in SPEC_SECRET_KEYS}

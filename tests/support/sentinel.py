"""A real Redis Sentinel set for tests: one master, one replica and N Sentinels on free
loopback ports, each its own process with its files in a temporary directory.

API (kept stable; the chaos suite builds on it)::

    from tests.support.sentinel import SentinelCluster, sentinel_binary

    with SentinelCluster(sentinels=3, master_name="streamspace", password=None) as cluster:
        cluster.env(db=2)        # {"REDIS_SENTINELS": "127.0.0.1:p1,...",
                                 #  "REDIS_SENTINEL_MASTER": "streamspace",
                                 #  "REDIS_URL": "redis://[:password@]127.0.0.1:<unused>/2"}
        cluster.sentinels        # [("127.0.0.1", p1), ...] (SentinelCluster.sentinels_env: "h:p,h:p")
        cluster.master_port      # the port of the current master, as the Sentinels report it
        cluster.replica_ports    # the ports of the running servers that are not the master now
        cluster.client(port)     # a redis.Redis on one server (decode_responses=True)
        new = cluster.failover()     # SENTINEL FAILOVER; returns the new master's port once every
                                     # Sentinel reports it, it says role:master and the old master
                                     # replicates from it (demoted at once by REPLICAOF, its
                                     # clients left connected: harsher than the Sentinels, who
                                     # close them; a client must notice READONLY / UNBLOCKED)
        new = cluster.kill_master()  # SIGKILL the master; returns the promoted replica's port
        new = cluster.vanish_master()  # with master_netns: the master's host vanishes without
                                       # RST or FIN (tests/support/netns.py); returns the
                                       # promoted replica's port
        cluster.revive(old_port)     # start a killed server again, as a replica of the master
        cluster.role(port)           # "master" / "slave" as that server says, None if it is down
        cluster.master_per_sentinel()  # {sentinel port: the master port it names}
        cluster.wait_ready()         # until a failover is possible again (as start() does)
        cluster.stop()               # everything down (the ``with`` block does it)

Options: ``SentinelCluster(sentinels=3, master_name="streamspace", *, password=None,
down_after_ms=1000, failover_timeout_ms=4000, master_netns=None)``; with a password the servers require it (and
replicate with it) and ``env()``'s ``REDIS_URL`` carries it; the Sentinels themselves have none.
With ``master_netns`` (a started :class:`tests.support.netns.Netns`) the first master runs in
that namespace, at its address; everything else stays on loopback.

Construction starts nothing; ``start()`` (or entering the ``with`` block) starts the servers,
then the Sentinels, and returns once a failover is possible (every Sentinel sees the replica
with its link up and ``SENTINEL CKQUORUM`` is OK). Failures are detected after
``down_after_ms`` (default 1000 ms), so ``kill_master`` usually returns within a few seconds.
The quorum is a majority of the Sentinels. The binary is Debian's ``redis-sentinel``
(``scripts/ensure-services.sh`` installs it); ``sentinel_binary()`` returns its path or ends
the test with :func:`tests.support.ci.unavailable`. Logs of every process stay in
``cluster.directory`` (``cluster.logs()``) until ``stop()``; timeouts name them.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import redis

from tests.support.ci import unavailable
from tests.support.netns import Netns
from tests.support.ports import free_port, wait_for_port
from tests.support.waits import wait_until

HOST = "127.0.0.1"


def sentinel_binary() -> str:
    """The path of ``redis-sentinel`` (and checks ``redis-server`` is there too)."""
    sentinel, server = shutil.which("redis-sentinel"), shutil.which("redis-server")
    if not sentinel or not server:
        unavailable("redis-sentinel / redis-server are not installed (run scripts/ensure-services.sh)")
    return sentinel


class SentinelCluster:
    """One master, one replica and ``sentinels`` Sentinels on loopback; see the module doc."""

    def __init__(
        self,
        sentinels: int = 3,
        master_name: str = "streamspace",
        *,
        password: str | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 4000,
        master_netns: Netns | None = None,
    ) -> None:
        if sentinels < 1:
            raise ValueError("at least one Sentinel")
        self.master_name = master_name
        self.password = password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.sentinel_count = sentinels
        self.master_netns = master_netns
        self.hosts: dict[int, str] = {}  # server port -> the address it listens on
        self.quorum = sentinels // 2 + 1
        self.directory: Path | None = None
        self.servers: dict[int, subprocess.Popen | None] = {}
        self.sentinel_processes: dict[int, subprocess.Popen] = {}
        self._tmp: tempfile.TemporaryDirectory | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> SentinelCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> SentinelCluster:
        sentinel = sentinel_binary()
        self._tmp = tempfile.TemporaryDirectory(prefix="ss-sentinel-")
        self.directory = Path(self._tmp.name)
        try:
            master = free_port()
            self._start_server(master, replica_of=None, netns=self.master_netns)
            replica = free_port()
            self._start_server(replica, replica_of=master)
            for _ in range(self.sentinel_count):
                self._start_sentinel(sentinel, free_port(), master)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every Sentinel and server (SIGKILL: nothing is persisted) and remove the files."""
        for process in [*self.sentinel_processes.values(), *self.servers.values()]:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
        self.sentinel_processes.clear()
        self.servers.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # --- what a test configures the code under test with ----------------------------------
    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [(HOST, port) for port in self.sentinel_processes]

    @property
    def sentinels_env(self) -> str:
        return ",".join(f"{host}:{port}" for host, port in self.sentinels)

    def env(self, db: int = 0) -> dict[str, str]:
        """``REDIS_SENTINELS``, ``REDIS_SENTINEL_MASTER`` and a ``REDIS_URL`` carrying the password
        and ``db``; its host:port is a closed port, so a client that used it instead of the
        Sentinels would fail."""
        auth = f":{self.password}@" if self.password else ""
        return {
            "REDIS_SENTINELS": self.sentinels_env,
            "REDIS_SENTINEL_MASTER": self.master_name,
            "REDIS_URL": f"redis://{auth}{HOST}:{self._closed_port}/{db}",
        }

    # --- observing ---------------------------------------------------------------------
    def client(self, port: int) -> redis.Redis:
        """A client of the server on ``port`` (with the password)."""
        host = self.hosts.get(port, HOST)
        return redis.Redis(host=host, port=port, password=self.password, decode_responses=True, socket_timeout=5)

    def sentinel_client(self, port: int) -> redis.Redis:
        return redis.Redis(host=HOST, port=port, decode_responses=True, socket_timeout=5)

    def master_per_sentinel(self) -> dict[int, int | None]:
        """Each live Sentinel's answer to ``SENTINEL GET-MASTER-ADDR-BY-NAME`` (its port)."""
        answers: dict[int, int | None] = {}
        for port, process in self.sentinel_processes.items():
            if process.poll() is not None:
                continue
            try:
                address = self.sentinel_client(port).sentinel_get_master_addr_by_name(self.master_name)
            except redis.RedisError:
                answers[port] = None
                continue
            answers[port] = int(address[1]) if address else None
        return answers

    @property
    def master_port(self) -> int:
        """The master's port as a majority of the Sentinels report it."""
        answers = [port for port in self.master_per_sentinel().values() if port is not None]
        if not answers:
            raise RuntimeError(f"no Sentinel names a master{self._tails()}")
        return max(set(answers), key=answers.count)

    @property
    def replica_ports(self) -> list[int]:
        """The running servers that are not the master now (a killed one is not listed)."""
        master = self.master_port
        return [port for port, process in self.servers.items() if port != master and process is not None]

    def role(self, port: int) -> str | None:
        """``master`` / ``slave`` as the server on ``port`` says, or None when it does not answer."""
        try:
            return str(self.client(port).info("replication")["role"])
        except redis.RedisError:
            return None

    def logs(self) -> list[Path]:
        return sorted(self.directory.glob("*.log")) if self.directory else []

    # --- failures ----------------------------------------------------------------------
    def failover(self, timeout: float = 30.0) -> int:
        """``SENTINEL FAILOVER`` on one Sentinel; returns the new master's port once every Sentinel
        names it, it reports role:master and the old master replicates from it."""
        old = self.master_port
        first = next(iter(self.sentinel_processes))

        def ask() -> bool:
            try:
                return bool(self.sentinel_client(first).execute_command("SENTINEL FAILOVER", self.master_name))
            except redis.ResponseError as exc:  # INPROG / NOGOODSLAVE while the replica catches up
                if "INPROG" in str(exc) or "NOGOODSLAVE" in str(exc):
                    return False
                raise

        wait_until(ask, timeout, 0.2, "SENTINEL FAILOVER to be accepted", logs=self.logs())
        new = self._wait_promoted(old, timeout)
        # The Sentinels demote the old master only when they next read its INFO (up to 10 s
        # later); doing what they will do at once keeps the next failover possible sooner.
        self.client(old).replicaof(HOST, new)
        wait_until(
            lambda: self._replicates_from(old, new), timeout, 0.1, "the old master to replicate", logs=self.logs()
        )
        wait_until(
            lambda: self._known_replica(old),
            timeout,
            0.1,
            "the Sentinels to list the old master as a replica",
            logs=self.logs(),
        )
        return new

    def kill_master(self, timeout: float = 30.0) -> int:
        """SIGKILL the master; returns the promoted replica's port once every live Sentinel names
        it and it reports role:master. The killed server stays down until :meth:`revive`."""
        old = self.master_port
        process = self.servers[old]
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        self.servers[old] = None
        return self._wait_promoted(old, timeout)

    def vanish_master(self, timeout: float = 30.0) -> int:
        """The master's namespace vanishes (:meth:`tests.support.netns.Netns.vanish`); returns the
        promoted replica's port once every Sentinel names it and it reports role:master."""
        old = self.master_port
        if self.master_netns is None or self.hosts.get(old) != self.master_netns.address:
            raise RuntimeError("vanish_master needs the master in master_netns")
        self.master_netns.vanish()
        self.servers[old] = None
        return self._wait_promoted(old, timeout)

    def revive(self, port: int, timeout: float = 30.0) -> None:
        """Start the killed server on ``port`` again as a replica of the current master and wait
        until it replicates (the Sentinels would reconfigure it that way too)."""
        if self.servers.get(port) is not None:
            raise RuntimeError(f"the server on {port} is running")
        master = self.master_port
        self._start_server(port, replica_of=master)
        wait_until(
            lambda: self._replicates_from(port, master),
            timeout,
            0.1,
            "the revived server to replicate",
            logs=self.logs(),
        )
        self.wait_ready(timeout)

    # --- readiness ---------------------------------------------------------------------
    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every Sentinel names one master, sees a replica whose link is up, and has a quorum."""

        def ready() -> bool:
            answers = self.master_per_sentinel()
            masters = set(answers.values())
            if len(masters) != 1 or None in masters:
                return False
            for port, process in self.sentinel_processes.items():
                if process.poll() is not None:
                    continue
                try:
                    client = self.sentinel_client(port)
                    replicas = client.sentinel_slaves(self.master_name)
                    client.execute_command("SENTINEL CKQUORUM", self.master_name)
                    known = client.sentinel_sentinels(self.master_name)
                except redis.RedisError:
                    return False
                if len(known) < self.sentinel_count - 1:
                    return False
                if not any(r.get("master-link-status") == "ok" and "s_down" not in r["flags"] for r in replicas):
                    return False
            return True

        wait_until(ready, timeout, 0.1, "the Sentinels to agree on a master with a live replica", logs=self.logs())

    # --- internals ---------------------------------------------------------------------
    @property
    def _closed_port(self) -> int:
        if not hasattr(self, "_closed"):
            self._closed = free_port()
        return self._closed

    def _start_server(self, port: int, replica_of: int | None, netns: Netns | None = None) -> None:
        assert self.directory is not None
        data = self.directory / f"redis-{port}"
        data.mkdir(exist_ok=True)
        host = netns.address if netns else HOST
        command = [
            *("redis-server", "--port", str(port), "--bind", host, "--save", "", "--appendonly", "no"),
            *("--dir", str(data), "--logfile", str(self.directory / f"redis-{port}.log")),
            *("--replica-announce-ip", host),
        ]
        if netns:  # reached from outside the namespace's loopback
            command += ["--protected-mode", "no"]
        if self.password:
            command += ["--requirepass", self.password, "--masterauth", self.password]
        if replica_of is not None:
            command += ["--replicaof", self.hosts[replica_of], str(replica_of)]
        self.hosts[port] = host
        if netns:
            process = netns.popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_until(lambda: self.role(port) == "master", 30, 0.05, f"redis-server on {host}:{port}")
        else:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for_port(port, process)
        self.servers[port] = process

    def _start_sentinel(self, binary: str, port: int, master: int) -> None:
        assert self.directory is not None
        name = self.master_name
        lines = [
            f"port {port}",
            f"bind {HOST}",
            "daemonize no",
            f"dir {self.directory}",
            f"logfile {self.directory / f'sentinel-{port}.log'}",
            f"sentinel announce-ip {HOST}",
            f"sentinel monitor {name} {self.hosts[master]} {master} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {name} {self.password}")
        conf = self.directory / f"sentinel-{port}.conf"  # the Sentinel rewrites it: writable
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        process = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.sentinel_processes[port] = process
        wait_for_port(port, process)

    def _wait_promoted(self, old: int, timeout: float) -> int:
        def promoted() -> int | None:
            answers = {p for p in self.master_per_sentinel().values()}
            if len(answers) != 1:
                return None
            (new,) = answers
            if new is None or new == old or self.role(new) != "master":
                return None
            return new

        return wait_until(promoted, timeout, 0.1, f"a master other than {old}", logs=self.logs())

    def _replicates_from(self, port: int, master: int) -> bool:
        try:
            info = self.client(port).info("replication")
        except redis.RedisError:
            return False
        return (
            info.get("role") == "slave"
            and int(info.get("master_port", 0)) == master
            and info.get("master_link_status") == "up"
        )

    def _known_replica(self, port: int) -> bool:
        """Every live Sentinel lists ``port`` as a replica that is not down. (A SENTINEL FAILOVER
        asked before they also read its link as up answers NOGOODSLAVE; ``failover`` retries it.)"""
        for sentinel, process in self.sentinel_processes.items():
            if process.poll() is not None:
                continue
            try:
                replicas = self.sentinel_client(sentinel).sentinel_slaves(self.master_name)
            except redis.RedisError:
                return False
            if not any(int(r["port"]) == port and "s_down" not in r["flags"] for r in replicas):
                return False
        return True

    def _tails(self) -> str:
        return "".join(f"\n--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in self.logs())

"""Where Redis is, from ``REDIS_URL`` and optionally ``REDIS_SENTINELS`` + ``REDIS_SENTINEL_MASTER``,
and clients for it (docs/architecture.md §3, §13). Shared by the agent and the control plane
(``streamspace/redis_client.py`` builds its clients from this); it imports no Django.

With ``REDIS_SENTINELS`` (comma-separated ``host:port``, IPv6 as ``[addr]:port``) the master is
whichever server the Sentinels name for ``REDIS_SENTINEL_MASTER``; ``REDIS_URL`` then gives only
the password, user, database number and TLS (``rediss://``): its host:port is ignored. Every
client made here asks the Sentinels again whenever it opens a connection, and a connection to a
demoted master fails (READONLY → ConnectionError) instead of writing to a replica, so after a
failover the next command or reconnect reaches the new master. The Sentinels themselves are
asked without a password.

Bad values raise :class:`agent_runtime.config.ConfigError` naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from agent_runtime.config import ConfigError

#: The URL the control plane uses when ``REDIS_SENTINELS`` is set without ``REDIS_URL``:
#: database 0, no password (its host is never connected to).
SENTINEL_DEFAULT_URL = "redis://sentinel-master/0"


#: Seconds a question to one Sentinel may take before the next Sentinel is asked.
SENTINEL_TIMEOUT_S = 5.0

# A master that vanishes without a word (its host or container gone: no RST, no FIN) must not
# stall its clients: a blocked receive would wait forever and a written command for TCP's
# retransmission timeout (minutes). Every master connection therefore probes an idle peer
# (TCP keepalive) and gives up on data the peer has not acknowledged (TCP_USER_TIMEOUT, which
# also ends the keepalive once probes go unanswered that long); a live server's kernel answers
# both however busy the server is, so an idle blocking receive (channels_redis #422,
# docs/architecture.md §14) is never torn down. A dead master is noticed within about
# DEAD_PEER_TIMEOUT_S + KEEPALIVE_INTERVAL_S of its last packet (docs/architecture.md §13.4).

#: Seconds without traffic before the first keepalive probe.
KEEPALIVE_IDLE_S = 5
#: Seconds between keepalive probes.
KEEPALIVE_INTERVAL_S = 2
#: Unanswered probes before the connection is dropped (where TCP_USER_TIMEOUT is missing).
KEEPALIVE_COUNT = 3
#: Seconds the peer may leave sent data or probes unacknowledged before the connection fails.
DEAD_PEER_TIMEOUT_S = 10
#: Seconds a new connection to the master may take (a silent address drops the SYN).
CONNECT_TIMEOUT_S = 5.0


def parse_sentinels(value: str, *, name: str = "REDIS_SENTINELS") -> tuple[tuple[str, int], ...]:
    """``"s1:26379, s2:26379"`` → ``(("s1", 26379), ("s2", 26379))``; ``""`` → ``()``."""
    sentinels: list[tuple[str, int]] = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if entry.startswith("["):  # [::1]:26379
            host, sep, port = entry[1:].partition("]:")
        else:
            host, sep, port = entry.rpartition(":")
        if not sep or not host or ":" in host and not entry.startswith("["):
            raise ConfigError(
                f"{name}={value!r}: {entry!r} is not host:port (example: sentinel-0:26379,sentinel-1:26379)"
            )
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name}={value!r}: the port of {entry!r} is not a number from 1 to 65535")
        sentinels.append((host, int(port)))
    return tuple(sentinels)


@dataclass(frozen=True)
class RedisTarget:
    """One Redis deployment: a URL, and the Sentinels that name its master (when there are)."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, default_url: str = "") -> RedisTarget | None:
        """The target the environment names, or None when there is no Redis (no ``REDIS_URL``
        and no ``REDIS_SENTINELS``)."""
        return cls.build(
            env.get("REDIS_URL", "") or default_url,
            env.get("REDIS_SENTINELS", ""),
            env.get("REDIS_SENTINEL_MASTER", ""),
        )

    @classmethod
    def build(cls, url: str, sentinels: str, master_name: str) -> RedisTarget | None:
        """Validated target from the three variables' values (see the module doc)."""
        parsed = parse_sentinels(sentinels)
        master_name = master_name.strip()
        if parsed and not master_name:
            raise ConfigError("REDIS_SENTINELS is set: REDIS_SENTINEL_MASTER must name the master (e.g. mymaster)")
        if master_name and not parsed:
            raise ConfigError("REDIS_SENTINEL_MASTER is set without REDIS_SENTINELS (host:port of the Sentinels)")
        url = url.strip() or (SENTINEL_DEFAULT_URL if parsed else "")
        if not url:
            return None
        scheme = urlsplit(url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            given = f"{scheme}://" if scheme else "no scheme"  # never the URL: it may hold the password
            raise ConfigError(f"REDIS_URL must start with redis://, rediss:// or unix:// (got {given})")
        if parsed and scheme == "unix":
            raise ConfigError("REDIS_URL=unix://... cannot be combined with REDIS_SENTINELS")
        target = cls(url=url, sentinels=parsed, master_name=master_name)
        target.db  # noqa: B018 validates the database number now, not at the first connection
        return target

    # --- what the URL contributes --------------------------------------------------------
    @property
    def db(self) -> int:
        parts = urlsplit(self.url)
        path = parts.path.strip("/")
        if parts.scheme == "unix":
            return 0  # redis-py reads ?db= for sockets; from_url handles it
        if not path:
            return 0
        if not path.isdigit():
            raise ConfigError(f"REDIS_URL database {path!r} is not a number")
        return int(path)

    @property
    def password(self) -> str | None:
        password = urlsplit(self.url).password
        return unquote(password) if password else None

    @property
    def username(self) -> str | None:
        username = urlsplit(self.url).username
        return unquote(username) if username else None

    @property
    def ssl(self) -> bool:
        return urlsplit(self.url).scheme == "rediss"

    def connection_kwargs(self) -> dict[str, Any]:
        """What every connection to the master needs besides its address."""
        kwargs: dict[str, Any] = {"db": self.db}
        if self.password is not None:
            kwargs["password"] = self.password
        if self.username is not None:
            kwargs["username"] = self.username
        if self.ssl:
            kwargs["ssl"] = True
        return kwargs

    def socket_options(self) -> dict[str, Any]:
        """redis-py options that make a connection to a vanished master fail instead of hang
        (see :func:`dead_peer_options`); none for a ``unix://`` socket."""
        return {} if urlsplit(self.url).scheme == "unix" else dead_peer_options()

    def sentinel_pool_kwargs(self, *, asyncio: bool = False) -> dict[str, Any]:
        """Options of a ``SentinelConnectionPool`` on the master: :meth:`connection_kwargs`,
        :meth:`socket_options`, the reconnect retry (:func:`reconnect_retry`) and a connection
        class that asks the Sentinels on every reconnect (agent_runtime/redis_sentinel_connection.py).
        Merge a caller's options over it (``{**kwargs, **options}``): theirs win."""
        from agent_runtime import redis_sentinel_connection as classes  # noqa: PLC0415 needs redis

        kwargs = self.connection_kwargs()
        ssl = kwargs.pop("ssl", False)
        if asyncio:
            connection_class = classes.AsyncSentinelSSLConnection if ssl else classes.AsyncSentinelConnection
        else:
            connection_class = classes.SentinelSSLConnection if ssl else classes.SentinelConnection
        return {
            "connection_class": connection_class,
            "retry": reconnect_retry(asyncio=asyncio),
            **self.socket_options(),
            **kwargs,
        }

    # --- clients -------------------------------------------------------------------------
    def client(self, *, asyncio: bool = False, **options: Any) -> Any:
        """A ``redis.Redis`` (or ``redis.asyncio.Redis`` with ``asyncio=True``) on the master;
        ``options`` are redis-py client options (``decode_responses``, ``socket_timeout``...),
        over :meth:`socket_options`."""
        try:
            if asyncio:
                import redis.asyncio as redis_module  # noqa: PLC0415 optional in the agent
                from redis.asyncio.sentinel import Sentinel  # noqa: PLC0415
            else:
                import redis as redis_module  # noqa: PLC0415
                from redis.sentinel import Sentinel  # noqa: PLC0415
        except ImportError as exc:  # the agent's optional dependency: streamspace-agent[redis]
            raise ConfigError("Redis needs the 'redis' package (pip install streamspace-agent[redis])") from exc
        if not self.sentinels:
            return redis_module.Redis.from_url(self.url, **{**self.socket_options(), **options})
        sentinel = Sentinel(list(self.sentinels), sentinel_kwargs=sentinel_kwargs(options))
        return sentinel.master_for(self.master_name, **{**self.sentinel_pool_kwargs(asyncio=asyncio), **options})

    def channels_host(self, **options: Any) -> dict[str, Any]:
        """One entry of channels-redis' ``hosts`` (``options`` over :meth:`socket_options`)."""
        if not self.sentinels:
            return {"address": self.url, **self.socket_options(), **options}
        return {
            "sentinels": list(self.sentinels),
            "master_name": self.master_name,
            "sentinel_kwargs": sentinel_kwargs(options),
            **self.sentinel_pool_kwargs(asyncio=True),
            **options,
        }

    def celery_url(self) -> str:
        """The Celery/kombu broker or result-backend URL: ``REDIS_URL`` itself, or with Sentinels
        ``sentinel://[:password@]host:port/db`` once per Sentinel joined by ``;`` (kombu and
        Celery then need ``master_name``: :meth:`celery_transport_options`)."""
        if not self.sentinels:
            return self.url
        auth = ""
        if self.password is not None or self.username is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password or '', safe='')}@"
        return ";".join(f"sentinel://{auth}{_host(host)}:{port}/{self.db}" for host, port in self.sentinels)

    def celery_transport_options(self) -> dict[str, Any]:
        """``master_name`` for kombu's Sentinel transport and Celery's Sentinel result backend."""
        return {"master_name": self.master_name} if self.sentinels else {}

    def describe(self) -> str:
        """Where Redis is, without the password (for logs and errors)."""
        if self.sentinels:
            listed = ",".join(f"{_host(h)}:{p}" for h, p in self.sentinels)
            return f"master {self.master_name!r} of Sentinels {listed}, db {self.db}"
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or ''}{':' if parts.port else ''}{parts.port or ''}{parts.path}"


def reconnect_retry(*, asyncio: bool = False) -> Any:
    """The retry policy of connections to a Sentinel-named master: redis-py's own default for a
    client made from a URL (3 retries on ConnectionError/TimeoutError, jittered exponential
    backoff), which a client on a Sentinel pool otherwise lacks. A command on a connection the
    failover closed, or that met READONLY on the demoted master, is sent again on a new
    connection to the master the Sentinels name then."""
    from redis.backoff import ExponentialWithJitterBackoff  # noqa: PLC0415 optional in the agent

    if asyncio:
        from redis.asyncio.retry import Retry  # noqa: PLC0415
    else:
        from redis.retry import Retry  # noqa: PLC0415
    return Retry(ExponentialWithJitterBackoff(base=1, cap=10), 3)


def dead_peer_options() -> dict[str, Any]:
    """``socket_keepalive``, its probe timings (plus ``TCP_USER_TIMEOUT`` where the platform has
    it) and ``socket_connect_timeout``: the module constants above, as redis-py options."""
    import socket  # noqa: PLC0415 only the option numbers

    probes: dict[int, int] = {}
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        ("TCP_USER_TIMEOUT", DEAD_PEER_TIMEOUT_S * 1000),  # milliseconds
    ):
        if hasattr(socket, name):
            probes[getattr(socket, name)] = value
    return {
        "socket_keepalive": True,
        "socket_keepalive_options": probes,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
    }


def sentinel_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options of the connections to the Sentinels: the client's socket timeouts, and never none
    (a Sentinel that hangs must not stall the discovery of the master; the next one is asked)."""
    timeout = options.get("socket_timeout") or SENTINEL_TIMEOUT_S
    connect = options.get("socket_connect_timeout") or timeout
    return {"socket_timeout": timeout, "socket_connect_timeout": connect}


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host

"""REDIS_SENTINELS / REDIS_SENTINEL_MASTER: parsing, what each client is configured with, and
bad values as a clear error at startup (manage.py and the agent's CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agent_runtime.config import ConfigError, LeaseConfig
from agent_runtime.redis_client import RedisTarget, parse_sentinels
from tests.support import ROOT
from tests.support.processes import AGENT_BIN


def test_sentinels_are_parsed_with_ipv6_and_spaces() -> None:
    assert parse_sentinels(" s1:26379, [::1]:26380 ,") == (("s1", 26379), ("::1", 26380))
    assert parse_sentinels("") == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("foo", "'foo' is not host:port"),
        ("s1:26379,foo", "'foo' is not host:port"),
        ("s1:abc", "the port of 's1:abc' is not a number"),
        ("s1:0", "is not a number from 1 to 65535"),
        ("s1:70000", "is not a number from 1 to 65535"),
        (":26379", "is not host:port"),
        ("::1:26379", "is not host:port"),
    ],
)
def test_bad_sentinels_name_the_variable_and_the_entry(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match="REDIS_SENTINELS=") as error:
        parse_sentinels(value)
    assert message in str(error.value)


def test_master_name_and_sentinels_go_together() -> None:
    with pytest.raises(ConfigError, match="REDIS_SENTINEL_MASTER must name the master"):
        RedisTarget.build("", "s1:26379", "")
    with pytest.raises(ConfigError, match="without REDIS_SENTINELS"):
        RedisTarget.build("redis://r:6379/0", "", "mymaster")
    with pytest.raises(ConfigError, match="database 'x' is not a number"):
        RedisTarget.build("redis://r:6379/x", "s1:1", "m")
    assert RedisTarget.build("", "", "") is None
    with pytest.raises(ConfigError, match=r"redis://, rediss:// or unix:// \(got http://\)") as error:
        RedisTarget.build("http://:hunter2@r:6379/0", "", "")
    assert "hunter2" not in str(error.value)


def test_url_gives_password_and_db_but_not_the_address() -> None:
    target = RedisTarget.build("rediss://user:p%40ss@ignored:1/3", "s1:26379,s2:26380", "mymaster")
    assert target is not None
    assert target.connection_kwargs() == {"db": 3, "password": "p@ss", "username": "user", "ssl": True}
    host = target.channels_host(socket_timeout=None)
    assert host["sentinels"] == [("s1", 26379), ("s2", 26380)] and host["master_name"] == "mymaster"
    assert "address" not in host and host["db"] == 3 and host["password"] == "p@ss"
    assert host["sentinel_kwargs"]["socket_timeout"] > 0  # discovery never waits forever
    assert target.celery_url() == "sentinel://user:p%40ss@s1:26379/3;sentinel://user:p%40ss@s2:26380/3"
    assert target.celery_transport_options() == {"master_name": "mymaster"}
    assert "p@ss" not in target.describe() and "s1:26379" in target.describe()
    client = target.client(socket_timeout=2)
    pool = client.connection_pool
    assert pool.service_name == "mymaster" and pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["password"] == "p@ss"


def test_sentinels_without_url_mean_db_0_without_password() -> None:
    target = RedisTarget.build("", "s1:26379", "m")
    assert target is not None and target.connection_kwargs() == {"db": 0}


def test_agent_lease_reads_the_sentinels() -> None:
    env = {"ENABLE_HA": "true", "HA_BACKEND": "redis", "REDIS_SENTINELS": "s1:26379", "REDIS_SENTINEL_MASTER": "m"}
    lease = LeaseConfig.from_env("local", ROOT, env)
    assert lease.redis is not None and lease.redis.sentinels == (("s1", 26379),)
    with pytest.raises(ConfigError, match="REDIS_SENTINELS="):
        LeaseConfig.from_env("local", ROOT, {**env, "REDIS_SENTINELS": "s1:port"})
    with pytest.raises(ConfigError, match="HA_BACKEND=redis needs REDIS_URL or REDIS_SENTINELS"):
        LeaseConfig.from_env("local", ROOT, {"ENABLE_HA": "true", "HA_BACKEND": "redis"})


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    environ.update(env)
    return subprocess.run(command, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("sentinels", "message"),
    [("foo", "REDIS_SENTINELS='foo': 'foo' is not host:port"), ("s1:port", "the port of 's1:port' is not a number")],
)
def test_control_plane_refuses_to_start_on_bad_sentinels(sentinels: str, message: str, tmp_path) -> None:
    result = _run(
        [sys.executable, "manage.py", "check"],
        REDIS_SENTINELS=sentinels,
        REDIS_SENTINEL_MASTER="mymaster",
        STREAMSPACE_DATA_DIR=str(tmp_path),
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_agent_refuses_to_start_on_bad_sentinels(tmp_path) -> None:
    result = _run(
        [AGENT_BIN, "--platform", "local", "--control-plane", "http://127.0.0.1:1", "--token", "t"],
        ENABLE_HA="true",
        HA_BACKEND="redis",
        REDIS_SENTINELS="foo",
        REDIS_SENTINEL_MASTER="mymaster",
        STREAMSPACE_AGENT_DATA_DIR=str(tmp_path),
    )
    assert result.returncode != 0
    assert "REDIS_SENTINELS='foo': 'foo' is not host:port" in result.stderr
    assert "Traceback" not in result.stderr


def test_settings_give_every_redis_user_the_sentinels(tmp_path) -> None:
    """What streamspace/settings.py builds from the variables: the channel layer's host, the
    cache's pool, Celery's broker URL and master_name, and a REDIS_URL default."""
    probe = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "host = s.CHANNEL_LAYERS['default']['CONFIG']['hosts'][0]; "
        "print(json.dumps({'url': s.REDIS_URL, 'sentinels': s.REDIS_SENTINELS, 'master': s.REDIS_SENTINEL_MASTER, "
        "'layer': [host['master_name'], host['sentinels'], host['db'], host.get('password')], "
        "'cache': s.CACHES['default']['OPTIONS'], 'broker': s.CELERY_BROKER_URL, "
        "'transport': s.CELERY_BROKER_TRANSPORT_OPTIONS['master_name']}))"
    )
    result = _run(
        [sys.executable, "-c", probe],
        REDIS_URL="redis://:pw@ignored:1/4",
        REDIS_SENTINELS="s1:26379,s2:26380",
        REDIS_SENTINEL_MASTER="mymaster",
        DJANGO_SETTINGS_MODULE="streamspace.settings",
        STREAMSPACE_DATA_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["sentinels"] == [["s1", 26379], ["s2", 26380]] and got["master"] == "mymaster"
    assert got["layer"] == ["mymaster", [["s1", 26379], ["s2", 26380]], 4, "pw"]
    assert got["cache"] == {"pool_class": "streamspace.redis_client.SentinelCachePool"}
    assert got["broker"] == "sentinel://:pw@s1:26379/4;sentinel://:pw@s2:26380/4" and got["transport"] == "mymaster"
    # Without REDIS_URL: database 0, no password; Redis is still on (sessions, caches, registry).
    result = _run(
        [sys.executable, "-c", probe],
        REDIS_SENTINELS="s1:26379",
        REDIS_SENTINEL_MASTER="mymaster",
        DJANGO_SETTINGS_MODULE="streamspace.settings",
        STREAMSPACE_DATA_DIR=str(tmp_path),
    )
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["url"] and got["layer"][2:] == [0, None] and got["broker"] == "sentinel://s1:26379/0"


def test_every_master_connection_detects_a_dead_peer() -> None:
    """Keepalive probes, TCP_USER_TIMEOUT and a connect timeout on every master connection
    (docs/architecture.md §13.4), with or without Sentinels; a caller's own option wins; a
    unix socket gets none (it has no TCP)."""
    import socket

    from django.conf import settings

    for target in (RedisTarget.build("redis://r:6379/1", "", ""), RedisTarget.build("", "s1:26379", "m")):
        assert target is not None
        options = target.socket_options()
        assert options["socket_keepalive"] is True and options["socket_connect_timeout"] > 0
        assert options["socket_keepalive_options"][socket.TCP_USER_TIMEOUT] > 0  # Linux
        for pool in (target.client().connection_pool, target.client(asyncio=True).connection_pool):
            assert pool.connection_kwargs["socket_keepalive_options"] == options["socket_keepalive_options"]
        host = target.channels_host(socket_timeout=None)
        assert host["socket_keepalive"] is True and host["socket_timeout"] is None
        assert target.client(socket_connect_timeout=1).connection_pool.connection_kwargs["socket_connect_timeout"] == 1
    unix = RedisTarget.build("unix:///run/redis.sock?db=1", "", "")
    assert unix is not None and unix.socket_options() == {}
    if not settings.REDIS_SENTINELS and settings.REDIS_URL.startswith("redis"):
        assert settings.CACHES["default"]["OPTIONS"]["socket_keepalive"] is True


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/3", "sentinel://127.0.0.1:26379/3"])
def test_the_celery_broker_notices_a_dead_master_like_every_other_client(url, tmp_path) -> None:
    """kombu's Redis connections carry the dead-peer TCP options (keepalive probes and
    TCP_USER_TIMEOUT) of ``dead_peer_options``: the pool kombu builds from the settings has them."""
    probe = (
        "import json, django; django.setup(); from streamspace.celery import app; "
        "from agent_runtime.redis_client import dead_peer_options; "
        "options = app.conf.broker_transport_options; "
        "conn = app.connection_for_write(); channel = conn.default_channel if conn.transport_cls == 'redis' else None; "
        "kwargs = channel.client.connection_pool.connection_kwargs if channel else {}; "
        "expected = dead_peer_options(); "
        "print(json.dumps({'options': all(options.get(k) == v for k, v in expected.items()), "
        "'pool': (not channel) or all(kwargs.get(k) == v for k, v in expected.items())}))"
    )
    env = {
        "CELERY_BROKER_URL": url,
        "DJANGO_SETTINGS_MODULE": "streamspace.settings",
        "STREAMSPACE_DATA_DIR": str(tmp_path),
    }
    if url.startswith("sentinel://"):  # the broker URL the settings derive from the Sentinels
        env.update(REDIS_SENTINELS="127.0.0.1:26379", REDIS_SENTINEL_MASTER="mymaster")
    result = _run([sys.executable, "-c", probe], **env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"options": True, "pool": True}

"""A Redis master that vanishes without a word, as a ``docker kill``ed container does (its
network gone: no RST, no FIN): the master runs in a network namespace
(tests/support/netns.py) that disappears while clients hold connections to it, and the
Sentinels promote the replica. A killed process on this host would be answered by the kernel
with RST, which every client notices at once; here only the TCP options every master
connection carries (agent_runtime/redis_client.py ``dead_peer_options``) end the wait, within
about ``DEAD_PEER_TIMEOUT_S + KEEPALIVE_INTERVAL_S`` of the last packet
(docs/architecture.md §13.4). Without them a blocked receive waits forever and a command
written to the dead peer for TCP's retransmission timeout (minutes); each wait below is
bounded by ``WAIT_S``, a few times that bound, and fails the test when it runs out."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent_runtime.redis_client import DEAD_PEER_TIMEOUT_S, KEEPALIVE_INTERVAL_S, RedisTarget
from streamspace.channel_layer import RedisChannelLayer
from tests.support.netns import Netns
from tests.support.sentinel import SentinelCluster
from tests.support.waits import until

pytestmark = [pytest.mark.slow]

#: How long a client may take to notice the dead master and reach the new one, in this test:
#: three times the documented bound (the machine is loaded; without the fix it is minutes).
WAIT_S = 3 * (DEAD_PEER_TIMEOUT_S + KEEPALIVE_INTERVAL_S)


@pytest.fixture
def cluster() -> Iterator[SentinelCluster]:
    """A master in its own namespace, a replica and three Sentinels on loopback."""
    with (
        Netns() as host,
        SentinelCluster(sentinels=3, master_name="ss-dead", password="s3cret", master_netns=host) as running,
    ):
        yield running


def target(cluster: SentinelCluster) -> RedisTarget:
    built = RedisTarget.from_env(cluster.env(db=3))
    assert built is not None
    return built


def bounded(call: Callable[[], Any], what: str) -> tuple[Any, float]:
    """``call()``'s result and its seconds, in a thread given ``WAIT_S``; a call still waiting
    then fails the test (the thread is a daemon: a hung socket cannot hold the run)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        began = time.monotonic()
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - began

    thread = threading.Thread(target=run, daemon=True, name=f"bounded {what}")
    thread.start()
    thread.join(WAIT_S)
    if thread.is_alive():
        pytest.fail(f"{what} still waits on the vanished master after {WAIT_S:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"], outcome["seconds"]


async def test_a_blocked_receive_notices_the_vanished_master_and_gets_the_next_message(
    cluster: SentinelCluster,
) -> None:
    """A consumer blocked in ``receive`` (BZPOPMIN on the master): the master vanishes, the
    replica is promoted; a message sent then (by a layer with no connection yet, so only the
    receive can be stuck) reaches it within the bound."""
    host = target(cluster).channels_host(socket_timeout=None)  # as settings.CHANNEL_LAYERS
    sender = RedisChannelLayer(hosts=[host], prefix=f"ss-{uuid.uuid4().hex[:6]}")
    receiver = RedisChannelLayer(hosts=[host], prefix=sender.prefix)
    try:
        channel = await receiver.new_channel()
        await sender.send(channel, {"type": "m", "n": 1})
        assert (await asyncio.wait_for(receiver.receive(channel), 10))["n"] == 1

        waiting = asyncio.create_task(receiver.receive(channel))
        old = cluster.client(cluster.master_port)
        await until(lambda: old.info("clients")["blocked_clients"] >= 1, timeout=10, what="the receive blocked")
        began = time.monotonic()
        new = await asyncio.to_thread(cluster.vanish_master)
        assert new in cluster.replica_ports or cluster.master_port == new

        fresh = RedisChannelLayer(hosts=[host], prefix=sender.prefix)
        await asyncio.wait_for(fresh.send(channel, {"type": "m", "n": 2}), WAIT_S)
        await fresh.close_pools()
        message = await asyncio.wait_for(waiting, WAIT_S)
        assert message["n"] == 2
        print(
            f"dead master: the blocked receive got the next message {time.monotonic() - began:.1f} s after it vanished"
        )
    finally:
        for layer in (sender, receiver):
            await asyncio.wait_for(layer.close_pools(), WAIT_S)


def test_commands_on_a_pooled_connection_reach_the_new_master(settings, cluster: SentinelCluster) -> None:
    """A plain client and the Django cache, each with a pooled connection to the master that
    vanishes: their next command is answered by the new master within the bound."""
    from django.core.cache.backends.redis import RedisCache

    env = cluster.env(db=3)
    settings.REDIS_URL = env["REDIS_URL"]
    settings.REDIS_SENTINELS = list(cluster.sentinels)
    settings.REDIS_SENTINEL_MASTER = cluster.master_name
    client = target(cluster).client(decode_responses=True)  # no socket_timeout: redis-py's None
    cache = RedisCache(settings.REDIS_URL, {"OPTIONS": {"pool_class": "streamspace.redis_client.SentinelCachePool"}})
    key = f"ss-dead:{uuid.uuid4().hex}"
    client.set(key, "before")
    cache.set(key, {"n": 1}, 60)
    new = cluster.vanish_master()
    replica = cluster.client(new)
    replica.execute_command("SELECT", 3)
    assert replica.get(key) == "before"  # replicated before the master vanished

    _, write_s = bounded(lambda: client.set(key, "after"), "a SET on the pooled connection")
    assert replica.get(key) == "after"
    assert client.connection_pool.get_master_address()[1] == new
    value, cache_s = bounded(lambda: cache.get(key), "a cache GET on the pooled connection")
    assert value == {"n": 1}
    print(f"dead master: SET answered after {write_s:.1f} s, cache GET after {cache_s:.1f} s")

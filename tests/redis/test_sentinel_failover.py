"""Every Redis client of the control plane and the agent against a real Sentinel set, across
a master failover (SENTINEL FAILOVER, which demotes the old master, and a killed master):
each finds the new master without a restart and without writing to the demoted one."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from agent_runtime.leader.redis import RedisLease
from agent_runtime.redis_client import RedisTarget
from agents_app.hub import presence as registry
from streamspace import health, redis_client
from streamspace.channel_layer import RedisChannelLayer
from tests.support.sentinel import SentinelCluster
from tests.support.waits import until

pytestmark = [pytest.mark.slow]


def target(cluster: SentinelCluster) -> RedisTarget:
    target = RedisTarget.from_env(cluster.env(db=2))
    assert target is not None
    return target


def test_sync_client_follows_a_failover_and_a_killed_master(sentinel_settings, cluster: SentinelCluster) -> None:
    client = redis_client.client(decode_responses=True, socket_timeout=5)
    key = f"ss-test:{uuid.uuid4().hex}"
    client.set(key, "before")
    assert cluster.client(cluster.master_port).get(key) is None  # written to db 2, not db 0

    second = cluster.failover()
    client.set(key, "after-failover")  # its connection to the demoted master was closed: reconnects
    on_new = cluster.client(second)
    on_new.execute_command("SELECT", 2)
    assert on_new.get(key) == "after-failover"
    assert client.connection_pool.get_master_address()[1] == second

    third = cluster.kill_master()
    client.set(key, "after-kill")
    assert client.connection_pool.get_master_address()[1] == third
    assert health._check_redis() is None
    cluster.revive(second)


def test_the_django_cache_follows_a_failover(sentinel_settings, cluster: SentinelCluster) -> None:
    from django.core.cache.backends.redis import RedisCache

    settings = sentinel_settings
    cache = RedisCache(settings.REDIS_URL, {"OPTIONS": {"pool_class": "streamspace.redis_client.SentinelCachePool"}})
    key = f"k-{uuid.uuid4().hex}"
    cache.set(key, {"n": 1}, 60)
    assert cache.get(key) == {"n": 1}
    cluster.failover()
    cache.set(key, {"n": 2}, 60)
    assert cache.get(key) == {"n": 2}


async def test_presence_registry_follows_a_failover(sentinel_settings, cluster: SentinelCluster) -> None:
    """The asyncio writer (register, heartbeat) and the sync reader (``connections``) of the
    agent registry both reach the new master."""
    agent_id = f"sentinel-{uuid.uuid4().hex[:8]}"
    fields = dict(platform="local", agent_id=agent_id, pod="pod-a", channel="ch-1", is_leader=True)
    await registry.register_instance(instance_id="i1", metadata={}, **fields)
    assert set(await asyncio.to_thread(registry.connections, agent_id)) == {"i1"}
    await asyncio.to_thread(cluster.failover)
    await registry.heartbeat(instance_id="i1", **fields)
    await registry.register_instance(instance_id="i2", metadata={}, **fields)
    assert set(await asyncio.to_thread(registry.connections, agent_id)) == {"i1", "i2"}  # i1 was replicated
    for instance in ("i1", "i2"):
        await registry.unregister_instance(platform="local", agent_id=agent_id, instance_id=instance)
    assert await asyncio.to_thread(registry.connections, agent_id) == {}


async def test_a_blocked_channel_layer_receiver_recovers_after_a_failover(cluster: SentinelCluster) -> None:
    """A consumer waits in ``receive`` (BZPOPMIN on the old master) while the master changes;
    the Sentinels close its connection, and the layer reconnects to the new master, where the
    next message reaches it. Group sends go through the new master too."""
    host = target(cluster).channels_host(socket_timeout=None)
    sender = RedisChannelLayer(hosts=[host], prefix=f"ss-{uuid.uuid4().hex[:6]}")
    receiver = RedisChannelLayer(hosts=[host], prefix=sender.prefix)
    channel = await receiver.new_channel()
    await receiver.group_add("viewers", channel)
    await sender.send(channel, {"type": "m", "n": 1})
    assert (await asyncio.wait_for(receiver.receive(channel), 10))["n"] == 1

    waiting = asyncio.create_task(receiver.receive(channel))
    master = cluster.client(cluster.master_port)
    # The receive is blocked on the master about to be demoted (BZPOPMIN counts as blocked).
    await until(lambda: master.info("clients")["blocked_clients"] >= 1, timeout=10, what="the receive blocked")
    await asyncio.to_thread(cluster.failover)
    await sender.send(channel, {"type": "m", "n": 2})
    assert (await asyncio.wait_for(waiting, 20))["n"] == 2

    await sender.group_send("viewers", {"type": "m", "n": 3})
    assert (await asyncio.wait_for(receiver.receive(channel), 10))["n"] == 3
    await sender.flush()
    await sender.close_pools()
    await receiver.close_pools()


async def test_the_agent_lease_is_kept_across_a_failover(cluster: SentinelCluster) -> None:
    key = f"lease-{uuid.uuid4().hex[:8]}"
    holder = RedisLease(target(cluster), key, lease_duration=30.0, identity="a")
    other = RedisLease(target(cluster), key, lease_duration=30.0, identity="b")
    try:
        assert await holder.try_acquire()
        await asyncio.to_thread(cluster.failover)
        assert await holder.renew()  # the key was replicated; the renew reached the new master
        assert not await other.try_acquire()
        assert (await other.holder() or "").startswith("a:")
    finally:
        await holder.close()
        await other.close()


def test_celery_broker_on_sentinels_follows_a_failover(settings, cluster: SentinelCluster) -> None:
    """The broker URL and transport options settings give Celery (``sentinel://...;...`` and
    ``master_name``): kombu publishes with Celery's retry, and a consumer reads, on either side
    of a failover; the queue-length metric reads the same broker."""
    from kombu import Connection, Exchange, Queue

    broker = target(cluster)
    queue = Queue(f"ss-test-{uuid.uuid4().hex[:8]}", Exchange("ss-test", type="direct"), routing_key="k")
    with Connection(broker.celery_url(), transport_options=broker.celery_transport_options()) as connection:
        producer = connection.Producer()

        def publish(n: int) -> None:
            producer.publish({"n": n}, exchange=queue.exchange, routing_key="k", declare=[queue], retry=True)

        def take() -> int:
            with connection.SimpleQueue(queue) as simple:
                message = simple.get(timeout=10)
                message.ack()
                return message.payload["n"]

        settings.CELERY_BROKER_URL = broker.celery_url()
        settings.CELERY_BROKER_TRANSPORT_OPTIONS = broker.celery_transport_options()
        publish(1)
        assert redis_client.broker_client(socket_timeout=5).llen(queue.name) == 1
        assert take() == 1
        cluster.failover()
        publish(2)
        assert redis_client.broker_client(socket_timeout=5).llen(queue.name) == 1
        assert take() == 2

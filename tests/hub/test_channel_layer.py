"""The one-trip ``send`` of ``streamspace.channel_layer`` against real Redis: what
channels-redis' own ``send`` guarantees, and interoperability with it."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer as StockLayer
from django.conf import settings

from streamspace.channel_layer import RedisChannelLayer

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio]


def layer(cls=RedisChannelLayer, **config):
    return cls(hosts=[settings.REDIS_URL], prefix="test-layer", **config)


async def test_the_default_layer_is_the_one_trip_layer():
    from channels.layers import get_channel_layer

    assert type(get_channel_layer()) is RedisChannelLayer


async def test_process_local_and_general_channels_round_trip_and_interoperate():
    ours, stock = layer(), layer(StockLayer)
    try:
        local = await stock.new_channel()
        await ours.send(local, {"type": "x.y", "n": 1})
        assert await asyncio.wait_for(stock.receive(local), 5) == {"type": "x.y", "n": 1}
        await ours.send("general", {"type": "x.y", "n": 2})
        await stock.send("general", {"type": "x.y", "n": 3})
        got = [await asyncio.wait_for(ours.receive("general"), 5) for _ in range(2)]
        assert [m["n"] for m in got] == [2, 3]  # one queue, in order, whoever wrote it
    finally:
        await ours.flush()
        await stock.flush()


async def test_capacity_raises_channel_full_and_keeps_what_was_queued():
    ours = layer(capacity=3)
    try:
        for n in range(3):
            await ours.send("small", {"type": "x", "n": n})
        with pytest.raises(ChannelFull):
            await ours.send("small", {"type": "x", "n": 3})
        got = [(await asyncio.wait_for(ours.receive("small"), 5))["n"] for _ in range(3)]
        assert got == [0, 1, 2]
    finally:
        await ours.flush()


async def test_the_key_expires_and_expired_messages_are_dropped_before_counting():
    ours = layer(capacity=1, expiry=60)
    try:
        await ours.send("aging", {"type": "x", "n": 0})
        conn = ours.connection(0)
        key = ours.prefix + "aging"
        assert 0 < await conn.ttl(key) <= 60
        # age the queued message past the expiry: the next send drops it instead of refusing
        member = (await conn.zrange(key, 0, -1))[0]
        await conn.zadd(key, {member: time.time() - 120})
        await ours.send("aging", {"type": "x", "n": 1})
        assert (await asyncio.wait_for(ours.receive("aging"), 5))["n"] == 1
    finally:
        await ours.flush()


async def test_message_and_channel_name_checks_are_kept():
    ours = layer()
    with pytest.raises(TypeError):
        await ours.send("bad name", {"type": "x"})
    with pytest.raises(AssertionError):
        await ours.send("fine", ["not", "a", "dict"])

"""The channel layer's blocking receive asks Redis again after a lost connection, but only for
``RECEIVE_RECONNECT_WINDOW_S``: a Redis that stays away is an error, not a silent wait."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from streamspace import channel_layer
from streamspace.channel_layer import RedisChannelLayer
from tests.support.ports import free_port


async def test_a_receive_on_a_redis_that_stays_away_fails_after_the_window(monkeypatch) -> None:
    monkeypatch.setattr(channel_layer, "RECEIVE_RECONNECT_WINDOW_S", 0.5)
    layer = RedisChannelLayer(hosts=[{"address": f"redis://127.0.0.1:{free_port()}/0", "socket_timeout": None}])
    began = time.monotonic()
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(layer.receive("nobody.listens"), 30)
    elapsed = time.monotonic() - began
    assert 0.5 <= elapsed < 20  # asked again through the window (plus redis-py's own retries), then gave up
    await layer.close_pools()

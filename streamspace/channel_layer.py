"""The Redis channel layer, with ``send`` in one round trip.

``channels_redis.core.RedisChannelLayer.send`` makes four sequential trips to Redis for every
message (drop expired messages, count, add, refresh the expiry). Every agent command crosses
replicas that way, so this subclass runs the same four commands as one Lua script: same keys,
same scores, same capacity check (``ChannelFull``), same expiry.

Receiving survives a Redis failover (docs/architecture.md §13): a consumer blocked in
``BZPOPMIN`` on a master that the Sentinels demote or that dies gets UNBLOCKED or a connection
error; the blocking pop is then asked again (with a short backoff, for up to
``RECEIVE_RECONNECT_WINDOW_S``) and its reconnect reaches the new master. Longer outages still
raise, so a consumer does not wait silently on a Redis that is gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer as _RedisChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

#: Seconds a blocked receive keeps asking again after Redis went away (a failover takes the
#: Sentinels' down-after-milliseconds plus an election: a few seconds).
RECEIVE_RECONNECT_WINDOW_S = 30.0

SEND_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class RedisChannelLayer(_RedisChannelLayer):
    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Send a message onto a (general or process-specific) channel; see the module doc."""
        assert isinstance(message, dict), "message is not a dict"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        assert "__asgi_channel__" not in message
        channel_non_local_name = channel
        if "!" in channel:  # process-local: the full name travels in the message
            message = dict(message.items())
            message["__asgi_channel__"] = channel
            channel_non_local_name = self.non_local_name(channel)
        channel_key = self.prefix + channel_non_local_name
        index = self.consistent_hash(channel) if "!" in channel else next(self._send_index_generator)
        now = time.time()
        added = await self.connection(index).eval(
            SEND_SCRIPT,
            1,
            channel_key,
            int(now) - int(self.expiry),
            self.get_capacity(channel),
            now,
            self.serialize(message),
            int(self.expiry),
        )
        if not added:
            raise ChannelFull()

    async def _brpop_with_clean(self, index: int, channel: str, timeout: float) -> Any:
        """The stock blocking pop, asked again across a failover (see the module doc)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECEIVE_RECONNECT_WINDOW_S
        delay = 0.05
        while True:
            try:
                return await super()._brpop_with_clean(index, channel, timeout)
            except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
                if isinstance(exc, ResponseError) and not str(exc).startswith("UNBLOCKED"):
                    raise
                if loop.time() > deadline:
                    raise
                log.warning("channel layer receive: %s; asking Redis again", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

"""The Redis channel layer, with ``send`` in one round trip.

``channels_redis.core.RedisChannelLayer.send`` makes four sequential trips to Redis for every
message (drop expired messages, count, add, refresh the expiry). Every agent command crosses
replicas that way, so this subclass runs the same four commands as one Lua script: same keys,
same scores, same capacity check (``ChannelFull``), same expiry; receiving is unchanged.
"""

from __future__ import annotations

import time
from typing import Any

from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer as _RedisChannelLayer

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

"""The control plane's Redis clients, all made here from ``settings.REDIS_TARGET``
(``REDIS_URL``, ``REDIS_SENTINELS``, ``REDIS_SENTINEL_MASTER``; agent_runtime/redis_client.py
parses them and documents the Sentinel behaviour).

With Sentinels every client asks them for the master whenever it opens a connection, so after
a failover the next command (or a listener's reconnect) reaches the new master. The channel
layer (settings ``CHANNEL_LAYERS``) and the Django cache (settings ``CACHES``, through
:class:`SentinelCachePool`) are configured from the same target.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from agent_runtime.redis_client import RedisTarget, sentinel_kwargs

__all__ = ["SentinelCachePool", "client", "enabled", "target"]


def enabled() -> bool:
    """Whether Redis is configured (``REDIS_URL`` or ``REDIS_SENTINELS``)."""
    return settings.REDIS_TARGET is not None


def target() -> RedisTarget:
    """The configured target; ImproperlyConfigured when there is no Redis."""
    configured = settings.REDIS_TARGET
    if configured is None:
        raise ImproperlyConfigured("no Redis configured (set REDIS_URL or REDIS_SENTINELS)")
    return configured


def client(*, asyncio: bool = False, **options: Any) -> Any:
    """A ``redis.Redis`` (``redis.asyncio.Redis`` with ``asyncio=True``) on the master."""
    return target().client(asyncio=asyncio, **options)


class SentinelCachePool:
    """``pool_class`` of Django's ``RedisCache`` when Sentinels are configured: ``from_url``
    ignores the URL's host and returns a pool whose connections go to the Sentinels' master."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Any:
        from redis.sentinel import Sentinel, SentinelConnectionPool  # noqa: PLC0415

        redis_target = target()
        sentinel = Sentinel(list(redis_target.sentinels), sentinel_kwargs=sentinel_kwargs(options))
        return SentinelConnectionPool(redis_target.master_name, sentinel, **redis_target.connection_kwargs(), **options)

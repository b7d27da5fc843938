"""The control plane's Redis clients, all made here from the settings ``REDIS_URL``,
``REDIS_SENTINELS`` and ``REDIS_SENTINEL_MASTER`` (agent_runtime/redis_client.py parses them
and documents the Sentinel behaviour; read at each call, so an overridden setting applies).

With Sentinels every client asks them for the master whenever it opens a connection, so after
a failover the next command (or a listener's reconnect) reaches the new master. The channel
layer (settings ``CHANNEL_LAYERS``) and the Django cache (settings ``CACHES``, through
:class:`SentinelCachePool`) are configured from the same target.
"""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from agent_runtime.redis_client import RedisTarget, sentinel_kwargs

__all__ = ["SentinelCachePool", "broker_client", "client", "enabled", "target"]


def enabled() -> bool:
    """Whether Redis is configured (``REDIS_URL`` or ``REDIS_SENTINELS``)."""
    return bool(settings.REDIS_URL)


def target() -> RedisTarget:
    """The configured target; ImproperlyConfigured when there is no Redis."""
    configured = _target(
        settings.REDIS_URL, tuple(map(tuple, settings.REDIS_SENTINELS)), settings.REDIS_SENTINEL_MASTER
    )
    if configured is None:
        raise ImproperlyConfigured("no Redis configured (set REDIS_URL or REDIS_SENTINELS)")
    return configured


@cache
def _target(url: str, sentinels: tuple[tuple[str, int], ...], master_name: str) -> RedisTarget | None:
    listed = ",".join(f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in sentinels)
    return RedisTarget.build(url, listed, master_name)


def client(*, asyncio: bool = False, **options: Any) -> Any:
    """A ``redis.Redis`` (``redis.asyncio.Redis`` with ``asyncio=True``) on the master."""
    return target().client(asyncio=asyncio, **options)


def broker_client(**options: Any) -> Any:
    """A ``redis.Redis`` on the Celery broker (``CELERY_BROKER_URL``: ``redis://``, or
    ``sentinel://...;sentinel://...`` with ``master_name`` in the broker transport options)."""
    url = settings.CELERY_BROKER_URL
    if not url.startswith("sentinel://"):
        return RedisTarget.build(url, "", "").client(**options)
    parts = [urlsplit(part) for part in url.split(";") if part.strip()]
    auth, _, _ = parts[0].netloc.rpartition("@")
    sentinels = ",".join(part.netloc.rpartition("@")[2] for part in parts)
    master_url = f"redis://{auth + '@' if auth else ''}sentinel-master{parts[0].path}"
    master_name = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("master_name", "")
    return RedisTarget.build(master_url, sentinels, master_name).client(**options)


class SentinelCachePool:
    """``pool_class`` of Django's ``RedisCache`` when Sentinels are configured: ``from_url``
    ignores the URL's host and returns a pool whose connections go to the Sentinels' master."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Any:
        from redis.sentinel import Sentinel, SentinelConnectionPool  # noqa: PLC0415

        redis_target = target()
        sentinel = Sentinel(list(redis_target.sentinels), sentinel_kwargs=sentinel_kwargs(options))
        return SentinelConnectionPool(
            redis_target.master_name, sentinel, **{**redis_target.sentinel_pool_kwargs(), **options}
        )

"""One cache backend per process for the paths that read the cache on every request or event:
users and API tokens (``accounts.user_cache``), portal sessions (``accounts.session_store``)
and the plugins' cached subscriptions, extensions and theme (``plugins_app``).

``django.core.cache.caches`` keeps one backend object per asgiref context, and under ASGI
each request runs in a context of its own, so every request would build a new backend:
for Redis, a new client, a new connection pool and a new TCP connection. These paths use
this process-wide backend instead; redis-py's connection pool is safe to share between
threads, and the local-memory backend keeps its data per location, shared either way.

Django's Redis client also builds a ``redis.Redis`` object for every command (about as
much CPU as the command itself); this backend's client keeps one per connection pool.
A ``redis.Redis`` on a shared pool is safe to use from any thread (each command checks a
connection out of the pool).

Keeping one client per pool needs names Django keeps private (``RedisCache._class`` and
``RedisCacheClient``'s ``_pools``, ``_pool_class``, ``_servers``, ``_pool_options``,
``_get_connection_pool_index``); they are used here only, and
``tests/identity/test_django_private_names.py`` ties them to the pinned Django.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.core.cache import DEFAULT_CACHE_ALIAS, BaseCache, caches
from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class _OneClientPerPool(RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}  # by server index, as Django's pools are

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            if index not in self._pools:  # as Django's ``_get_connection_pool`` makes it
                self._pools[index] = self._pool_class.from_url(self._servers[index], **self._pool_options)
            client = self._clients[index] = self._client(connection_pool=self._pools[index])
        return client


@cache
def shared_cache() -> BaseCache:
    """The ``default`` cache, one backend object (and for Redis, one client) for the whole process."""
    backend = caches.create_connection(DEFAULT_CACHE_ALIAS)
    if type(backend) is RedisCache:
        backend._class = _OneClientPerPool  # read when the backend first connects
    return backend

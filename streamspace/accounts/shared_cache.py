"""One cache backend per process for the per-request paths: users and portal sessions.

``django.core.cache.caches`` keeps one backend object per asgiref context, and under ASGI
each request runs in a context of its own, so every request would build a new backend:
for Redis, a new client, a new connection pool and a new TCP connection. The user cache
(``accounts.user_cache``) and the portal's session store (``accounts.session_store``) use
this process-wide backend instead; redis-py's connection pool is safe to share between
threads, and the local-memory backend keeps its data per location, shared either way.
"""

from __future__ import annotations

from functools import cache

from django.core.cache import DEFAULT_CACHE_ALIAS, BaseCache, caches


@cache
def shared_cache() -> BaseCache:
    """The ``default`` cache, one backend object for the whole process."""
    return caches.create_connection(DEFAULT_CACHE_ALIAS)

"""Portal sessions read from the shared cache, written through to the database.

Django's ``cached_db`` engine, on the process-wide backend of ``streamspace.shared_cache``
(Django's own would connect to Redis anew for every request under ASGI). Used with Redis
only (``settings.SESSION_ENGINE``): every process must see the same cache.
"""

from __future__ import annotations

from typing import Any

from django.contrib.sessions.backends import cached_db

from streamspace.shared_cache import shared_cache


class SessionStore(cached_db.SessionStore):
    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._cache: Any = shared_cache()

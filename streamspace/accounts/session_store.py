"""Portal sessions read from the shared cache, written through to the database.

Django's ``cached_db`` engine, on the process-wide backend of ``streamspace.shared_cache``
(Django's own would connect to Redis anew for every request under ASGI). Used with Redis
only (``settings.SESSION_ENGINE``): every process must see the same cache.

Every request with a session cookie reads the session and then its user: loading a
session this process has seen before also fetches, in the same ``MGET``, the user cache
entry (``accounts.user_cache``) of the user it was signed in as, so the session's user
costs no round trip of its own. The session key's user is remembered per process (a
signed-in session keeps its user: Django's ``login`` flushes it for another one); the
prefetched entry is used only when the loaded session names that user, and it follows the
user cache's generation rule, so a sign-out, a new password or a deactivation shows on the
next request as before. The session itself is Django's: same data, expiry and fallback to
the database.
"""

from __future__ import annotations

from typing import Any

from django.contrib import auth
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends import cached_db
from django.core.exceptions import ValidationError

from streamspace.accounts import user_cache
from streamspace.shared_cache import shared_cache

# Session key -> the user it was last loaded with, in this process. A hint only: a wrong or
# stale one costs the round trip it was meant to save, nothing else.
_session_users: dict[str, Any] = {}
_SESSION_USERS_MAX = 100_000


class SessionStore(cached_db.SessionStore):
    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._cache: Any = shared_cache()
        # The session user's cache entry, read with the session (see the module).
        self.prefetched_user: user_cache.Prefetched | None = None

    def load(self) -> dict[str, Any]:
        """``cached_db``'s load, with the remembered user's cache entry in the same round trip."""
        user_id = _session_users.get(self.session_key) if self.session_key else None
        if user_id is None:
            data = super().load()
        else:
            try:
                found, self.prefetched_user = user_cache.get_many_with_user([self.cache_key], user_id)
            except Exception:  # as cached_db: a cache that cannot answer leaves it to the database
                found = {}
            data = found.get(self.cache_key)
            if data is None:
                data = super().load()
        self._remember_user(data)
        return data

    def _remember_user(self, data: dict[str, Any]) -> None:
        raw = data.get(auth.SESSION_KEY)
        if raw is None or self.session_key is None:
            return
        try:
            user_id = get_user_model()._meta.pk.to_python(raw)
        except ValidationError:  # not a key of this user model: ``auth.get_user`` refuses it
            return
        if _session_users.get(self.session_key) != user_id:
            if len(_session_users) >= _SESSION_USERS_MAX:
                _session_users.clear()
            _session_users[self.session_key] = user_id

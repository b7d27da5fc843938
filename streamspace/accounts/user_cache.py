"""Users by id, kept in the shared cache for authentication (``STREAMSPACE_USER_CACHE_S``).

Every authenticated request loads its user; reading it from Redis costs a fraction of a
query through the ORM. A change to a user shows on every replica at once:

* each entry is stored with the user's *generation*, a token in the cache that
  :func:`forget` replaces; an entry whose generation is not the current one is ignored
  (and replaced by a fresh read of the database);
* :func:`forget` runs when a transaction that changed the user commits: every save and
  delete of a ``User`` (``receivers``), and every move of the credentials epoch
  (``User.revoke_credentials``, a queryset update that sends no signal). So a sign-out, a
  new password, a deactivation or a new role is seen by the next request, whichever
  replica serves it, and a viewer credential issued after a sign-out carries the new epoch.

A reader that loaded the row before the change and stores it after :func:`forget` stores
it under the old generation (read before the row), so it is never served.

Entries live in ``accounts.shared_cache``'s backend (one Redis client per process). The
cache is used only where every process shares it (``REDIS_URL``, default 60 s). With the
embedded default's per-process memory cache, a change made by another process (the job
runner, ``manage.py changepassword``) could not be forgotten in this one, so users are read
from the database there (``STREAMSPACE_USER_CACHE_S=0``).
"""

from __future__ import annotations

import hashlib
import secrets
from functools import cache as once
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from streamspace.accounts.shared_cache import shared_cache

# The model is looked up when used: ``accounts.models`` imports this module.


@once
def _schema() -> str:
    """Part of every key: entries pickled with another set of fields (a rolling upgrade) are not read."""
    fields = ",".join(field.attname for field in get_user_model()._meta.concrete_fields)
    return hashlib.sha256(fields.encode()).hexdigest()[:8]


def _keys(user_id: Any) -> tuple[str, str]:
    return f"user:{_schema()}:{user_id}", f"user-generation:{user_id}"


def enabled() -> bool:
    return settings.STREAMSPACE_USER_CACHE_S > 0


def get(user_id: Any) -> Any:
    """The user with primary key ``user_id`` (any state, active or not), or None."""
    users = get_user_model().objects
    if not enabled():
        return users.filter(pk=user_id).first()
    entry_key, generation_key = _keys(user_id)
    cache = shared_cache()
    found = cache.get_many([entry_key, generation_key])
    generation = found.get(generation_key)
    entry = found.get(entry_key)
    if entry is not None and entry[0] == generation:
        return entry[1]
    user = users.filter(pk=user_id).first()
    if user is not None:
        cache.set(entry_key, (generation, user), settings.STREAMSPACE_USER_CACHE_S)
    return user


def forget(user_id: Any) -> None:
    """Make every cached copy of the user stale, once the current transaction commits."""
    if not enabled():
        return
    _, generation_key = _keys(user_id)
    transaction.on_commit(lambda: shared_cache().set(generation_key, secrets.token_hex(8), None))

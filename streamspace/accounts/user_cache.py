"""Users by id and API tokens by prefix, kept in the shared cache for authentication.

Every authenticated request loads its user (and an API-token request its token row);
reading them from Redis costs a fraction of a query through the ORM. Every way in reads
through here: JWTs (``get``), API tokens (``get_token``, the token and its user in one
round trip) and the portal's session cookie (``accounts.middleware``; the session and its
user in one round trip, see ``accounts.session_store``). A change shows on
every replica at once:

* each entry is stored with the user's *generation*, a token in the cache that
  :func:`forget` replaces; an entry whose generation is not the current one is ignored
  (and replaced by a fresh read of the database);
* :func:`forget` runs when a transaction that changed the user commits: every save and
  delete of a ``User`` (``receivers``), and every move of the credentials epoch
  (``User.revoke_credentials``, a queryset update that sends no signal). So a sign-out, a
  new password, a deactivation or a new role is seen by the next request, whichever
  replica serves it, and a viewer credential issued after a sign-out carries the new epoch.
* a user's API tokens are stored under the same generation, and every change to a token
  (revocation, a save or delete in the admin) forgets its user: a revoked token is refused
  by the next request. ``last_used_at`` is written at most once a minute; the write drops
  that token's entry (:func:`forget_token`) so the next request reads the new time.

A reader that loaded the row before the change and stores it after :func:`forget` stores
it under the old generation (read before the row), so it is never served.

Entries live in ``streamspace.shared_cache``'s backend (one Redis client per process). The
cache is used only where every process shares it (``REDIS_URL``, default 60 s). With the
embedded default's per-process memory cache, a change made by another process (the job
runner, ``manage.py changepassword``) could not be forgotten in this one, so users are read
from the database there (``STREAMSPACE_USER_CACHE_S=0``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from functools import cache as once
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from streamspace.shared_cache import shared_cache

# The model is looked up when used: ``accounts.models`` imports this module.


# Before every key: a deployment has one; the tests give each test its own (its rolled-back
# changes forget nothing, and ids come back in the next run's database).
KEY_PREFIX = ""

# A token prefix's owner, remembered per process so that the token, its user and their
# generation come in one round trip. A token never changes hands; a prefix that comes back
# for another user (the old token deleted, a 1-in-2^32 draw) is found out and re-read.
_token_owners: dict[str, Any] = {}
_TOKEN_OWNERS_MAX = 100_000


@once
def _schema(model: str = "") -> str:
    """Part of every key: entries pickled with another set of fields (a rolling upgrade) are not read."""
    meta = (apps.get_model(model) if model else get_user_model())._meta
    fields = ",".join(field.attname for field in meta.concrete_fields)
    return hashlib.sha256(fields.encode()).hexdigest()[:8]


def _keys(user_id: Any) -> tuple[str, str]:
    return f"{KEY_PREFIX}user:{_schema()}:{user_id}", f"{KEY_PREFIX}user-generation:{user_id}"


def _token_key(prefix: str) -> str:
    return f"{KEY_PREFIX}api-token:{_schema('accounts.ApiToken')}:{prefix}"


def enabled() -> bool:
    return settings.STREAMSPACE_USER_CACHE_S > 0


@dataclass(frozen=True)
class Prefetched:
    """A user's cache entry and generation, read in the same round trip as something else."""

    user_id: Any
    found: dict[str, Any]


def get_many_with_user(keys: list[str], user_id: Any) -> tuple[dict[str, Any], Prefetched | None]:
    """``shared_cache().get_many(keys)``, and in the same round trip user ``user_id``'s entry.

    Pass the :class:`Prefetched` to :func:`get` for that user: the generation rule is the
    same as for a read of its own (the entry counts only under the current generation,
    both read at one moment, after any change that had committed).
    """
    if not enabled():
        return shared_cache().get_many(keys), None
    user_keys = _keys(user_id)
    found = shared_cache().get_many([*keys, *user_keys])
    mine = {key: found.pop(key) for key in user_keys if key in found}
    return found, Prefetched(user_id, mine)


def get(user_id: Any, prefetched: Prefetched | None = None) -> Any:
    """The user with primary key ``user_id`` (any state, active or not), or None.

    ``prefetched`` (from :func:`get_many_with_user`) saves the round trip when it is this
    user's; another user's is ignored.
    """
    users = get_user_model().objects
    if not enabled():
        return users.filter(pk=user_id).first()
    if prefetched is not None and prefetched.user_id == user_id:
        return _user(user_id, prefetched.found)
    return _user(user_id, shared_cache().get_many(_keys(user_id)))


def _user(user_id: Any, found: dict[str, Any]) -> Any:
    """The user from ``found`` (its entry and generation, as read), else from the database."""
    entry_key, generation_key = _keys(user_id)
    generation = found.get(generation_key)
    entry = found.get(entry_key)
    if entry is not None and entry[0] == generation:
        return entry[1]
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is not None:
        shared_cache().set(entry_key, (generation, user), settings.STREAMSPACE_USER_CACHE_S)
    return user


def get_token(prefix: str) -> Any:
    """The API token with ``prefix`` (any state) with its ``user`` (any state, or None), or None."""
    tokens = apps.get_model("accounts", "ApiToken").objects
    if not enabled():
        return tokens.select_related("user").filter(prefix=prefix).first()
    owner = _token_owners.get(prefix)
    if owner is None:
        owner = tokens.filter(prefix=prefix).values_list("user_id", flat=True).first()
        if owner is None:
            return None
        if len(_token_owners) >= _TOKEN_OWNERS_MAX:
            _token_owners.clear()
        _token_owners[prefix] = owner
    token_key = _token_key(prefix)
    user_key, generation_key = _keys(owner)
    cache = shared_cache()
    found = cache.get_many([token_key, user_key, generation_key])
    generation = found.get(generation_key)
    entry = found.get(token_key)
    if entry is not None and entry[0] == generation:
        token = entry[1]
    else:
        token = tokens.filter(prefix=prefix).first()
        if token is None or token.user_id != owner:
            del _token_owners[prefix]
            return None if token is None else get_token(prefix)
        cache.set(token_key, (generation, token), settings.STREAMSPACE_USER_CACHE_S)
    user = _user(owner, found)
    if user is None:  # deleted with its tokens since the token was read
        return None
    token.user = user
    return token


def forget(user_id: Any) -> None:
    """Make every cached copy of the user stale, once the current transaction commits."""
    if not enabled():
        return
    _, generation_key = _keys(user_id)
    transaction.on_commit(lambda: shared_cache().set(generation_key, secrets.token_hex(8), None))


def forget_token(prefix: str) -> None:
    """Drop the cached copy of one token (a change to it alone, e.g. its last use), after commit."""
    if enabled():
        transaction.on_commit(lambda: shared_cache().delete(_token_key(prefix)))

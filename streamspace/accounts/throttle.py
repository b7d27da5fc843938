"""Sign-in throttles kept in Django's cache (Redis in production, so shared by every replica).

Two limits complement django-axes' lockout per (account name, address):

* **Per-account backoff** (:func:`retry_after`, :func:`record_failure`, :func:`reset`): after
  ``LOGIN_BACKOFF_FREE_FAILURES`` failed passwords for one account name, from any addresses,
  each further attempt must wait: ``LOGIN_BACKOFF_BASE_S``, doubling with every failure, at
  most ``LOGIN_BACKOFF_MAX_S``. Attempts refused while waiting are not checked and do not
  count, so an attacker spreading guesses over many addresses gets one guess per wait. It is
  a wait, never a lock: every wait ends, and hammering the account during one does not
  lengthen it (an attacker who guesses once per wait can still keep the account at the
  longest wait: a known limit of any per-account limit without trusted-device cookies). The count
  is forgotten ``LOGIN_BACKOFF_RESET_S`` after the last failure, and on a successful
  sign-in. Account names are counted whether or not the account exists, so the answers
  reveal nothing.
* **Per-address SSO failure limit** (:func:`sso_failure`): refused SAML responses and OIDC
  callbacks from one address within a sliding window of ``SSO_FAILURE_WINDOW_S`` beyond
  ``SSO_FAILURE_LIMIT`` are answered 429. It only ever shapes the answer to a *failed*
  attempt: a valid assertion signs in whatever came before it from that address.

Concurrent attempts may each pass the check before any of them is counted; the cache's
atomic increment keeps the count itself exact.
"""

from __future__ import annotations

import hashlib
import math
import time

from django.conf import settings
from django.core.cache import cache

# Every key starts with this (tests give each test its own).
KEY_PREFIX = "streamspace:throttle:"


def _key(kind: str, value: str) -> str:
    return f"{KEY_PREFIX}{kind}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"


def now() -> float:
    """The clock of every throttle (one name for tests to move)."""
    return time.time()


# --- per-account backoff ------------------------------------------------------------------
def _wait_after(failures: int) -> float:
    """Seconds an account must wait after its ``failures``-th failure."""
    over = failures - settings.LOGIN_BACKOFF_FREE_FAILURES
    if over < 0:
        return 0.0
    return float(min(settings.LOGIN_BACKOFF_MAX_S, settings.LOGIN_BACKOFF_BASE_S * 2 ** min(over, 32)))


def retry_after(name: str | None) -> int:
    """Whole seconds until ``name`` may try a password again (0: now)."""
    if not name:
        return 0
    count_key, at_key = _account_keys(name)
    state = cache.get_many([count_key, at_key])
    failures, last = state.get(count_key), state.get(at_key)
    if not failures or last is None:
        return 0
    left = last + _wait_after(failures) - now()
    return math.ceil(left) if left > 0 else 0


def record_failure(name: str | None) -> None:
    """Count one failed password (or second-factor code) for ``name``."""
    if not name:
        return
    count_key, at_key = _account_keys(name)
    forget_after = settings.LOGIN_BACKOFF_RESET_S
    _increment(count_key, forget_after)
    cache.set(at_key, now(), timeout=forget_after)


def reset(*names: str | None) -> None:
    """Forget the failures of these account names (after a successful sign-in)."""
    keys = [key for name in names if name for key in _account_keys(name)]
    if keys:
        cache.delete_many(keys)


def _account_keys(name: str) -> tuple[str, str]:
    normalised = name.strip().lower()[:150]
    return _key("account", normalised), _key("account-at", normalised)


def _increment(key: str, timeout: int) -> int:
    """Atomically add one to a counter that expires ``timeout`` seconds after its last change."""
    if cache.add(key, 1, timeout=timeout):
        return 1
    try:
        value = cache.incr(key)
    except ValueError:  # expired between add() and incr()
        cache.set(key, 1, timeout=timeout)
        return 1
    cache.touch(key, timeout)
    return value


# --- per-address SSO failures -------------------------------------------------------------
def sso_failure(address: str | None) -> int:
    """Count one failed SSO attempt from ``address``; seconds to wait if it is over the limit.

    A sliding window approximated from two fixed windows (the previous one weighted by how
    much of it still overlaps), as nginx's and Cloudflare's limiters do.
    """
    if not address:
        return 0
    window = settings.SSO_FAILURE_WINDOW_S
    moment = now()
    slot = int(moment // window)
    current = _increment(_key("sso", f"{address}:{slot}"), window * 2)
    previous = cache.get(_key("sso", f"{address}:{slot - 1}"), 0)
    elapsed = moment - slot * window
    if previous * (1 - elapsed / window) + current <= settings.SSO_FAILURE_LIMIT:
        return 0
    return max(1, math.ceil(window - elapsed))

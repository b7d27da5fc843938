"""One world per test module; each cell runs in the test transaction rolled back after it.

The matrix has several hundred cells; building the principals, sessions, tokens and plugins
for each would dominate the run. The world is committed once per module (before the first
cell's transaction opens) and flushed after the last, the way ``TransactionTestCase`` leaves
the database; each cell is an ordinary ``django_db`` test, so a cell that stops a session or
deletes a template leaves the next cell the same world.

The sockets and the proxy are ASGI apps whose database calls go through
``database_sync_to_async``. A cell drives them with ``async_to_sync`` from this (the main)
thread, so those calls run here, on the connection that holds the transaction; channels
closes "old" connections around each such call, which inside a transaction would end it, so
that clean-up is switched off while a cell runs.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.test.utils import override_settings

from sessions_app.proxy import activity
from sessions_app.proxy import auth as proxy_auth
from tests.security.world import World, build_world
from tests.support import ROOT
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import stop


@pytest.fixture(scope="session")
def session_upstream() -> Iterator[str]:
    """``host:port`` of a session-like HTTP + WebSocket server (the proxy tests' upstream)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.proxy.upstream_server", "--port", str(port)], cwd=ROOT)
    try:
        wait_for_port(port, process)
        yield f"127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, session_upstream) -> Iterator[World]:
    """The principals and their rows, committed for the module, flushed after it."""
    # Users are created with the fast hasher, as everywhere in the suite (tests/conftest.py).
    with django_db_blocker.unblock():
        try:
            with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
                built = build_world(session_upstream)
            yield built
        finally:
            call_command("flush", interactive=False, verbosity=0)


@pytest.fixture
def cell(world, db, monkeypatch, settings) -> World:
    """The world for one cell (the cell's own changes are rolled back with its transaction;
    the cache, which holds rate-limit counters, is emptied)."""
    cache.clear()
    monkeypatch.setattr("channels.db.close_old_connections", lambda: None)
    settings.STREAMSPACE_PROXY_AUTH_CACHE_S = 0
    proxy_auth.clear_cache()
    activity._last_touch.clear()
    return world

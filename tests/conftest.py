"""Fixtures every test folder may use: personas (alice, bob, operator, admin), API clients,
catalog and agents, and the Docker engine (``tests/support/docker.py``). Helper functions
and classes shared between folders live in ``tests/support/``.

Two passes run the suite (see the Makefile): SQLite + in-memory channel layer, then
PostgreSQL + Redis. Tests marked ``postgres`` need the second; in CI a run that would
otherwise skip them fails instead.
"""

from __future__ import annotations

import os
import pwd

import pytest
from django.db import connection
from rest_framework.test import APIClient

from agents_app.models import Agent, AgentInstance
from agents_app.tokens import hash_token
from sessions_app.models import Template
from streamspace.accounts.models import Role, User
from tests.support.ci import unavailable
from tests.support.clients import client_for
from tests.support.factories import make_user

pytest_plugins = ["tests.support.docker"]

# Local sessions of the suite's agents run as the suite's own account. Run as root (as in
# containers), the local backend would otherwise start them as an unprivileged session
# user, who cannot reach an interpreter installed under /root; switching users has its own
# tests (tests/agent/test_local_session.py), which set the session user explicitly.
os.environ.setdefault("STREAMSPACE_LOCAL_SESSION_USER", pwd.getpwuid(os.geteuid()).pw_name)
# The suite's Docker agents (each test its own agent id) share one engine, often with other
# runs of the suite; one-agent-per-daemon claims would refuse all but one of them. The claim
# has its own tests (tests/agent/test_docker_daemon_claim.py), which turn it on.
os.environ.setdefault("STREAMSPACE_DOCKER_DAEMON_CLAIM", "off")


def on_postgres() -> bool:
    return connection.vendor == "postgresql"


def pytest_runtest_setup(item):
    """A ``postgres`` test outside the PostgreSQL pass: skipped locally, a failure in CI."""
    if item.get_closest_marker("postgres") and not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        unavailable("needs DATABASE_URL=postgres://... and REDIS_URL (make test sets them)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item (``item.rep_call``), so fixtures can dump logs when
    the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    # PBKDF2 at production strength is slow on purpose; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_plugin_caches():
    # Plugin rows are cached (subscriptions, extensions, theme) and dropped on every write;
    # a test's rows vanish by rollback, which no signal reports.
    from plugins_app import delivery, registry, theme

    for invalidate in (delivery.invalidate, registry.invalidate, theme.invalidate):
        invalidate()


@pytest.fixture(autouse=True)
def _fresh_throttles(monkeypatch):
    # Sign-in throttles live in the cache, which outlives a test (and, on Redis, the run).
    import uuid

    from streamspace.accounts import throttle

    monkeypatch.setattr(throttle, "KEY_PREFIX", f"streamspace:test-throttle:{uuid.uuid4().hex}:")


@pytest.fixture(autouse=True)
def _fresh_user_cache(monkeypatch):
    # Cached users and tokens live in the cache too: a test's rolled-back change forgets
    # nothing, and user ids come back in the next run's database.
    import uuid

    from streamspace.accounts import user_cache

    monkeypatch.setattr(user_cache, "KEY_PREFIX", f"streamspace:test-user-cache:{uuid.uuid4().hex}:")
    monkeypatch.setattr(user_cache, "_token_owners", {})


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    # Each test gets its own channel-layer instance. channels-redis keeps per-instance
    # receive locks; a receive still pending when an earlier test's event loop closed would
    # hold them, and every later receive (on another loop) would fail.
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def alice(db) -> User:
    return make_user("alice")


@pytest.fixture
def bob(db) -> User:
    return make_user("bob")


@pytest.fixture
def operator(db) -> User:
    return make_user("olivia", Role.OPERATOR)


@pytest.fixture
def admin_user(db) -> User:
    return make_user("admin", Role.ADMIN)


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def alice_client(alice) -> APIClient:
    return client_for(alice)


@pytest.fixture
def bob_client(bob) -> APIClient:
    return client_for(bob)


@pytest.fixture
def operator_client(operator) -> APIClient:
    return client_for(operator)


@pytest.fixture
def admin_client(admin_user) -> APIClient:
    return client_for(admin_user)


@pytest.fixture
def template(db) -> Template:
    return Template.objects.create(
        slug="xfce",
        display_name="XFCE",
        image="registry.local/xfce:1",
        category="Desktops",
        default_cpu_millicores=1000,
        default_memory_mb=1024,
    )


@pytest.fixture
def docker_agent(db) -> Agent:
    """A docker agent whose leader is connected (so it can serve image templates) on no
    channel: its commands stay ``pending`` for the test to read."""
    agent = Agent.objects.create(agent_id="docker-1", platform="docker", token_hash=hash_token("docker-1-token"))
    AgentInstance.objects.create(agent=agent, instance_id="docker-1-leader", is_leader=True, connected=True)
    return agent

"""The cached user lookup of API authentication (``accounts.user_cache``).

A cached user (and an API token's row) saves queries per request, and must never outlive a
change: a deactivation, a new role, a sign-out's new credentials epoch, a revoked token, a
new password show on the very next request, for a JWT, an API token and the portal's
session cookie alike. These run
with the cache on (the SQLite pass has a per-process memory cache, which is shared here by
the test and the request it makes; production needs Redis, see the module).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.cache import cache
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from sessions_app.viewer import read_viewer_token
from streamspace.accounts import session_store, user_cache
from streamspace.accounts.models import ApiToken, Role, User
from streamspace.accounts.tokens import create_token, revoke_token
from streamspace.shared_cache import shared_cache
from tests.support.clients import client_for
from tests.support.factories import make_session

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def cache_on(settings):
    settings.STREAMSPACE_USER_CACHE_S = 60
    cache.clear()
    yield
    cache.clear()


def user_queries(queries) -> list[str]:
    return [q["sql"] for q in queries if 'FROM "accounts_user"' in q["sql"]]


def account_queries(queries) -> list[str]:
    """Every statement on users, API tokens or portal sessions (reads and writes)."""
    tables = ('"accounts_user"', '"accounts_apitoken"', '"django_session"')
    reads_or_writes = [f"{verb} {table}" for table in tables for verb in ("FROM", "UPDATE", "INTO")]
    return [q["sql"] for q in queries if any(pattern in q["sql"] for pattern in reads_or_writes)]


def token_client(user: User, scope: str = "read") -> tuple[APIClient, ApiToken]:
    token, key = create_token(user, name=f"cache {scope}", scope=scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client, token


def warm(client: APIClient) -> None:
    """Two reads: the first records the token's use (dropping its entry), the second caches it."""
    for _ in range(2):
        assert client.get("/api/v1/sessions").status_code == 200


def portal_client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def same_cookie(client: Client) -> Client:
    """Another browser holding the same session cookie (what a second replica sees)."""
    other = Client()
    other.cookies = client.cookies.__class__(client.cookies)
    return other


def test_a_cached_user_costs_no_query(alice):
    client = client_for(alice)
    assert client.get("/api/v1/sessions").status_code == 200
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/sessions").status_code == 200
    assert user_queries(queries) == []


def test_without_the_cache_every_request_reads_the_user(settings, alice):
    settings.STREAMSPACE_USER_CACHE_S = 0
    client = client_for(alice)
    client.get("/api/v1/sessions")
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/sessions").status_code == 200
    assert len(user_queries(queries)) == 1


def test_a_deactivated_user_is_refused_at_once(alice):
    client = client_for(alice)
    assert client.get("/api/v1/sessions").status_code == 200
    alice.is_active = False
    alice.save()
    response = client.get("/api/v1/sessions")
    assert response.status_code == 401 and response.json()["detail"] == "User is inactive"


def test_a_deleted_user_is_refused_at_once(alice):
    client = client_for(alice)
    assert client.get("/api/v1/sessions").status_code == 200
    User.objects.filter(pk=alice.pk).delete()
    response = client.get("/api/v1/sessions")
    assert response.status_code == 401 and response.json()["detail"] == "User not found"


def test_a_new_role_applies_at_once(alice, bob, template, docker_agent):
    make_session(bob, template, docker_agent)
    client = client_for(alice)
    assert client.get("/api/v1/sessions?all=1").json()["count"] == 0
    alice.role = Role.OPERATOR
    alice.save(update_fields=["role"])
    assert client.get("/api/v1/sessions?all=1").json()["count"] == 1


def test_a_viewer_url_after_a_revocation_carries_the_new_epoch(alice, template, docker_agent):
    session = make_session(alice, template, docker_agent)
    client = client_for(alice)
    before = client.get(f"/api/v1/sessions/{session.pk}/viewer-url").json()["url"]
    alice.revoke_credentials()  # what a sign-out or a new password does
    after = client.get(f"/api/v1/sessions/{session.pk}/viewer-url").json()["url"]
    epochs = [read_viewer_token(parse_qs(urlsplit(url).query)["token"][0])["e"] for url in (before, after)]
    assert epochs == [0, User.objects.get(pk=alice.pk).credentials_epoch] and epochs[1] > 0


def test_a_copy_read_before_a_change_and_stored_after_it_is_never_served(alice):
    """The race of a reader that loaded the row before a change and stores it after."""
    entry_key, generation_key = user_cache._keys(alice.pk)
    stale_generation = cache.get(generation_key)
    stale = User.objects.get(pk=alice.pk)
    alice.is_active = False
    alice.save()  # forgets: a new generation
    cache.set(entry_key, (stale_generation, stale), 60)  # the slow reader stores its old copy
    assert user_cache.get(alice.pk).is_active is False


def test_a_change_that_rolls_back_forgets_nothing(alice):
    user_cache.get(alice.pk)
    generation = cache.get(user_cache._keys(alice.pk)[1])
    with pytest.raises(RuntimeError), transaction.atomic():
        alice.save()
        raise RuntimeError("roll back")
    assert cache.get(user_cache._keys(alice.pk)[1]) == generation


# ------------------------------------------------------------------------- API tokens --
def test_a_cached_api_token_costs_no_query(alice):
    client, _ = token_client(alice)
    warm(client)
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/sessions").status_code == 200
    assert account_queries(queries) == []


def test_a_revoked_token_is_refused_at_once(alice):
    client, token = token_client(alice)
    warm(client)
    revoke_token(token, actor=alice)
    response = client.get("/api/v1/sessions")
    assert response.status_code == 401 and response.json()["detail"] == "Invalid, expired or revoked token."


def test_a_deactivated_users_token_is_refused_at_once(alice):
    client, _ = token_client(alice)
    warm(client)
    alice.is_active = False
    alice.save()
    assert client.get("/api/v1/sessions").status_code == 401


def test_a_token_deleted_or_rescoped_in_the_admin_applies_at_once(alice, template):
    client, token = token_client(alice, scope="write")
    warm(client)
    token.scope = "read"
    token.save()
    response = client.post("/api/v1/sessions", {"template": template.slug}, format="json")
    assert response.status_code == 403 and "read scope" in response.json()["detail"]
    token.delete()
    assert client.get("/api/v1/sessions").status_code == 401


def test_a_token_copy_read_before_a_revocation_and_stored_after_it_is_never_served(alice):
    """The race of a reader that loaded the token before its revocation and stores it after."""
    client, token = token_client(alice)
    warm(client)
    stale_generation = cache.get(user_cache._keys(alice.pk)[1])
    stale = ApiToken.objects.get(pk=token.pk)
    revoke_token(token, actor=alice)  # forgets: a new generation
    cache.set(user_cache._token_key(token.prefix), (stale_generation, stale), 60)  # the slow reader
    assert user_cache.get_token(token.prefix).revoked_at is not None
    assert client.get("/api/v1/sessions").status_code == 401


def test_a_prefix_that_comes_back_for_another_user_is_read_afresh(alice, bob):
    client, token = token_client(alice)
    client.get("/api/v1/sessions")  # this process now knows the prefix as alice's
    prefix = token.prefix
    token.delete()
    again = ApiToken.objects.create(user=bob, name="again", prefix=prefix, key_hash=token.key_hash, scope="read")
    found = user_cache.get_token(prefix)
    assert (found.pk, found.user) == (again.pk, bob)


# ------------------------------------------------------------- portal session cookie --
def test_a_cached_portal_user_costs_no_user_query(alice):
    client = portal_client(alice)
    assert client.get("/api/v1/sessions").status_code == 200
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/sessions").status_code == 200
    assert user_queries(queries) == []


def test_a_deactivated_portal_user_is_refused_at_once(alice):
    client = portal_client(alice)
    assert client.get("/api/v1/sessions").status_code == 200
    alice.is_active = False
    alice.save()
    assert client.get("/api/v1/sessions").status_code == 401


def test_a_portal_sign_out_refuses_the_same_cookie_at_once(alice):
    client = portal_client(alice)
    elsewhere = same_cookie(client)
    assert elsewhere.get("/api/v1/sessions").status_code == 200
    assert client.post("/accounts/logout/").status_code in (200, 302)
    assert elsewhere.get("/api/v1/sessions").status_code == 401


def test_a_new_password_refuses_older_portal_sessions_at_once(alice):
    client = portal_client(alice)
    assert client.get("/api/v1/sessions").status_code == 200
    alice.set_password("a-new-password-for-alice")
    alice.save()
    assert client.get("/api/v1/sessions").status_code == 401


# ----------------------------------------------------------------- the shared backend --
@pytest.mark.postgres
def test_the_shared_redis_backend_keeps_one_client_and_shares_it_between_threads():
    backend = shared_cache()
    clients = {id(backend._cache.get_client(write=write)) for write in (False, True, False)}
    assert len(clients) == 1  # one server: one pool, one client
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: backend.set(f"shared-cache-test:{n}", n, 30), range(64)))
        found = list(pool.map(lambda n: backend.get(f"shared-cache-test:{n}"), range(64)))
    assert found == list(range(64))


class CacheReads:
    """Counts the round trips to the shared cache (``get`` and ``get_many``) while active."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        backend = shared_cache()
        for name in ("get", "get_many"):
            original = getattr(backend, name)
            monkeypatch.setattr(backend, name, self._counting(name, original))

    def _counting(self, name, original):
        def counted(*args, **kwargs):
            self.calls.append(name)
            return original(*args, **kwargs)

        return counted


@pytest.mark.postgres
def test_a_portal_request_reads_its_session_and_user_in_one_round_trip(monkeypatch, alice):
    """(The Redis session engine: with SQLite the sessions are in the database.)"""
    client = portal_client(alice)
    assert client.get("/api/v1/sessions").status_code == 200  # this process learns the session's user
    reads = CacheReads(monkeypatch)
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/sessions").status_code == 200
    assert reads.calls == ["get_many"] and account_queries(queries) == []


@pytest.mark.postgres
def test_a_wrong_remembered_session_user_costs_a_round_trip_not_the_answer(monkeypatch, alice, bob):
    client = portal_client(alice)
    assert client.get("/api/v1/users/me").json()["username"] == "alice"
    session_store._session_users[client.session.session_key] = bob.pk  # as if bob had held that key
    reads = CacheReads(monkeypatch)
    assert client.get("/api/v1/users/me").json()["username"] == "alice"
    assert reads.calls == ["get_many", "get_many"]  # the session (with bob's entry), then alice
    assert session_store._session_users[client.session.session_key] == alice.pk

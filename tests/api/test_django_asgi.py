"""``SyncRequestHandler``: Django's ASGI handler with each request in one worker-thread call.

It must answer exactly as Django's own ``ASGIHandler`` does, run a request's pieces on
one thread (so that thread's database connection is the request's and is released at
``request_finished``), and reuse its threads instead of starting one per request.
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
from uuid import uuid4

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.db import connections
from django.http import HttpRequest, HttpResponseBase
from django.test import Client
from rest_framework.request import Request
from rest_framework.views import APIView
from rest_framework_simplejwt.tokens import AccessToken

from streamspace.accounts.tokens import create_token
from streamspace.transport.django_asgi import SyncRequestHandler
from tests.support.factories import make_session

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ours():
    """A handler with one request thread, whose database connection is closed at the end."""
    handler = SyncRequestHandler(threads=1)
    yield handler
    handler.executor.submit(connections.close_all).result()
    handler.executor.shutdown()


async def call(app, method: str, path: str, *, headers=(), body: bytes = b"") -> dict:
    """One request through ``app``; status, headers and the whole body."""
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "http",
        "query_string": query.encode(),
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ["127.0.0.1", 50000],
        "server": ["127.0.0.1", 8000],
    }
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
    start = await communicator.receive_output(30)
    chunks = []
    while True:
        message = await communicator.receive_output(30)
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    await communicator.wait(30)
    return {"status": start["status"], "headers": sorted(start["headers"]), "body": b"".join(chunks)}


def bearer(user) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {AccessToken.for_user(user)}".encode())


async def test_answers_as_djangos_own_handler(ours, alice, template, docker_agent):
    session = await sync_to_async(make_session)(alice, template, docker_agent)
    auth = await sync_to_async(bearer)(alice)
    body = json.dumps({"template": "nope"}).encode()
    json_type = (b"content-type", b"application/json")
    requests = [
        ("GET", "/healthz", (), b""),
        ("GET", f"/api/v1/sessions/{session.pk}", (auth,), b""),
        ("GET", "/api/v1/sessions?page_size=5", (auth,), b""),
        ("GET", "/api/v1/sessions?state=bogus", (auth,), b""),
        ("GET", f"/api/v1/sessions/{session.pk}", (), b""),
        ("POST", "/api/v1/sessions", (auth, json_type), body),
        ("POST", "/api/v1/sessions", (auth, json_type), b"{not json"),
        ("GET", "/static/css/portal.css", (), b""),  # a streamed (file) response
        ("GET", "/no/such/page", (), b""),
    ]
    stock = ASGIHandler()
    for method, path, headers, payload in requests:
        expected = await call(stock, method, path, headers=headers, body=payload)
        got = await call(ours, method, path, headers=headers, body=payload)
        assert got == expected, (method, path)
    assert (await call(ours, "GET", "/static/css/portal.css"))["status"] == 200


async def test_a_request_runs_on_one_reused_thread(ours, alice):
    handler = ours
    seen: list[tuple[str, int]] = []

    def started(**kwargs):
        seen.append(("started", threading.get_ident()))

    def finished(**kwargs):
        seen.append(("finished", threading.get_ident()))

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        before = threading.active_count()
        for _ in range(5):
            answer = await call(handler, "GET", "/api/v1/sessions", headers=[await _bearer(alice)])
            assert answer["status"] == 200
        assert threading.active_count() <= before + 1  # the pool's one thread, not one per request
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert [kind for kind, _ in seen] == ["started", "finished"] * 5
    threads = {ident for _, ident in seen}
    assert len(threads) == 1 and threading.get_ident() not in threads


async def test_the_pool_runs_as_many_requests_at_once_as_the_setting_says(settings):
    """Six requests at once on a pool of ``STREAMSPACE_REQUEST_THREADS`` = 3: each waits in
    ``request_started`` until three are there, so a smaller pool would never fill the
    barrier (its requests would fail) and a larger one would run them on more threads."""
    settings.STREAMSPACE_REQUEST_THREADS = 3
    handler = SyncRequestHandler()
    together = threading.Barrier(3, timeout=10)
    threads: set[int] = set()

    def started(**kwargs):
        threads.add(threading.get_ident())
        together.wait()

    signals.request_started.connect(started)
    try:
        answers = await asyncio.gather(*(call(handler, "GET", "/healthz") for _ in range(6)))
    finally:
        signals.request_started.disconnect(started)
        handler.executor.shutdown()
    assert handler.threads == 3
    assert [answer["status"] for answer in answers] == [200] * 6
    assert len(threads) == 3


@pytest.mark.postgres
async def test_the_request_threads_connection_goes_back_at_request_finished(ours, alice):
    """(SQLite's in-memory test database is never closed, so this needs PostgreSQL.)"""
    handler = ours
    assert (await call(handler, "GET", "/api/v1/sessions", headers=[await _bearer(alice)]))["status"] == 200
    assert handler.executor.submit(lambda: connections["default"].connection).result() is None


async def _bearer(user):
    return await sync_to_async(bearer)(user)


def _portal_cookie(user) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


def _api_token(user) -> tuple[bytes, bytes]:
    return (b"authorization", f"Token {create_token(user, name='gc', scope='read')[1]}".encode())


@pytest.fixture
def saved_garbage():
    """What the cyclic collector frees from here on, kept in a list to look at."""
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)
    found: list = []
    yield found
    gc.set_debug(0)
    gc.garbage.clear()


async def test_a_finished_request_leaves_nothing_for_the_cyclic_collector(
    ours, alice, template, docker_agent, saved_garbage
):
    """Reference counting frees every request's Django and DRF objects as soon as it is answered."""
    session = await sync_to_async(make_session)(alice, template, docker_agent)
    kinds = [
        await sync_to_async(bearer)(alice),
        await sync_to_async(_api_token)(alice),
        await sync_to_async(_portal_cookie)(alice),
    ]
    answers = []
    for auth in kinds:
        for path in (f"/api/v1/sessions/{session.pk}", "/api/v1/sessions?page_size=5", f"/api/v1/sessions/{uuid4()}"):
            answers.append((await call(ours, "GET", path, headers=[auth]))["status"])
    answers.append((await call(ours, "GET", "/api/v1/sessions"))["status"])  # no credentials
    assert answers == [200, 200, 404] * 3 + [401]
    gc.collect()
    per_request = (HttpRequest, Request, HttpResponseBase, APIView)
    assert [type(o).__name__ for o in gc.garbage if isinstance(o, per_request)] == []

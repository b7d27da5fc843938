"""``/api/v1/sessions/<id>/files/<path>`` in process: who may do what, and bad input.

No agent is connected here, so a request the endpoint lets through ends at the agent with
503 ``agent_unavailable``: that status is how these tests see "authorized". The transfers
themselves are tested end to end in test_files_e2e.py and test_files_docker.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from django.test import Client
from rest_framework_simplejwt.tokens import AccessToken

from agents_app.models import Agent
from agents_app.tokens import hash_token
from sessions_app.files.endpoint import content_disposition, files_app, matches
from sessions_app.models import ShareRole
from streamspace.accounts.models import TokenScope
from streamspace.accounts.tokens import create_token
from tests.support.asgi import asgi_http
from tests.support.factories import make_session, share

pytestmark = pytest.mark.django_db(transaction=True)

ALLOWED = 503  # authorized: the request reached for the (absent) agent


async def call(method: str, target: str, *, headers=(), body: bytes = b"") -> tuple[int, dict, dict]:
    reply = await asgi_http(files_app, method, target, headers=headers, body=body)
    return reply.status, dict(reply.headers), json.loads(reply.body) if reply.body else {}


def bearer(user) -> tuple[str, str]:
    return ("authorization", f"Bearer {AccessToken.for_user(user)}")


@pytest.fixture
def agent(db) -> Agent:
    """An agent with no connected replica: every tunnel request to it fails at once."""
    return Agent.objects.create(agent_id="files-1", platform="local", token_hash=hash_token("files-1-token"))


@pytest.fixture
def running(alice, template, agent):
    return make_session(alice, template, agent)


def url(session, path: str = "") -> str:
    return f"/api/v1/sessions/{session.pk}/files/{path}"


def test_the_router_takes_only_files_paths():
    assert matches("/api/v1/sessions/0c2e6d2b-4f3e-4c44-9a51-6e0c1b1f2a3b/files")
    assert matches("/api/v1/sessions/0c2e6d2b-4f3e-4c44-9a51-6e0c1b1f2a3b/files/a/b")
    assert not matches("/api/v1/sessions/0c2e6d2b-4f3e-4c44-9a51-6e0c1b1f2a3b/filesystem")
    assert not matches("/api/v1/sessions/0c2e6d2b-4f3e-4c44-9a51-6e0c1b1f2a3b/logs")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_owner_operator_and_admin_pass(method, running, alice, operator, admin_user):
    body = b"data" if method == "PUT" else b""
    for user in (alice, operator, admin_user):
        headers = [bearer(user), ("content-length", str(len(body)))]
        status, _, data = await call(method, url(running, "notes.txt"), headers=headers, body=body)
        assert (status, data["code"]) == (ALLOWED, "agent_unavailable"), user


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_a_stranger_sees_no_session(method, running, bob):
    status, _, data = await call(method, url(running, "notes.txt"), headers=[bearer(bob), ("content-length", "1")])
    assert (status, data["code"]) == (404, "not_found")


async def test_anonymous_and_bad_credentials(running):
    status, _, data = await call("GET", url(running))
    assert (status, data["code"]) == (401, "not_authenticated")
    status, _, data = await call("GET", url(running), headers=[("authorization", "Bearer not-a-jwt")])
    assert (status, data["code"]) == (401, "authentication_failed")


async def test_a_viewer_share_reads_but_never_writes(running, bob):
    """Reading follows may_view, writing may_write_files (sessions_app/access.py): a viewer
    share downloads but never uploads or deletes."""
    await asyncio.to_thread(share, running, bob, role=ShareRole.VIEWER)
    status, _, _ = await call("GET", url(running, "notes.txt"), headers=[bearer(bob)])
    assert status == ALLOWED
    for method in ("PUT", "DELETE"):
        status, _, data = await call(method, url(running, "notes.txt"), headers=[bearer(bob), ("content-length", "1")])
        assert (status, data["code"]) == (403, "permission_denied")


async def test_a_collaborator_share_may_write(running, bob):
    await asyncio.to_thread(share, running, bob, role=ShareRole.COLLABORATOR)
    status, _, data = await call("DELETE", url(running, "notes.txt"), headers=[bearer(bob)])
    assert status != 403, data


async def test_a_read_only_api_token_cannot_upload(running, alice):
    token, key = await asyncio.to_thread(create_token, alice, name="ro", scope=TokenScope.READ)
    headers = [("authorization", f"Token {key}"), ("content-length", "1")]
    assert (await call("GET", url(running), headers=headers))[0] == ALLOWED
    status, _, _ = await call("PUT", url(running, "x"), headers=headers, body=b"x")
    assert status == 403


async def test_the_portal_cookie_needs_csrf_to_write(running, alice):
    client = Client()
    await asyncio.to_thread(client.force_login, alice)
    cookie = ("cookie", f"sessionid={client.cookies['sessionid'].value}")
    assert (await call("GET", url(running), headers=[cookie]))[0] == ALLOWED
    status, _, data = await call("PUT", url(running, "x"), headers=[cookie, ("content-length", "1")], body=b"x")
    assert (status, data["code"]) == (403, "permission_denied") and "CSRF" in data["detail"]
    csrf = "a" * 32
    headers = [
        ("cookie", f"sessionid={client.cookies['sessionid'].value}; csrftoken={csrf}"),
        ("x-csrftoken", csrf),
        ("origin", "http://testserver"),
        ("content-length", "1"),
    ]
    assert (await call("PUT", url(running, "x"), headers=headers, body=b"x"))[0] == ALLOWED


@pytest.mark.parametrize(
    ("state", "hint"),
    [("hibernated", "wake it"), ("waking", "waking up"), ("starting", "starting"), ("stopped", "launch it again")],
)
async def test_a_session_that_is_not_running_answers_409(state, hint, alice, template, agent):
    session = await asyncio.to_thread(make_session, alice, template, agent, state=state)
    status, _, data = await call("GET", url(session), headers=[bearer(alice)])
    assert (status, data["code"], data["state"]) == (409, "session_not_running", state)
    assert hint in data["detail"]


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("..", "invalid_path"),
        ("docs/../../etc/passwd", "invalid_path"),
        ("%2e%2e/etc/passwd", "invalid_path"),
        ("%2Fetc%2Fpasswd", "invalid_path"),  # absolute once decoded
        ("/etc/passwd", "invalid_path"),  # files//etc/passwd
        ("%ff%fe.txt", "invalid_path"),  # not UTF-8
        ("a%00b", "invalid_path"),
        ("a%0ab", "invalid_path"),
        ("docs//x", "invalid_path"),
    ],
)
async def test_bad_paths_are_refused(path, code, running, alice):
    status, _, data = await call("GET", url(running, path), headers=[bearer(alice)])
    assert (status, data["code"]) == (400, code)


async def test_bad_session_ids_and_methods(running, alice):
    status, _, data = await call("GET", "/api/v1/sessions/not-a-uuid/files/", headers=[bearer(alice)])
    assert (status, data["code"]) == (404, "not_found")
    status, headers, data = await call("POST", url(running, "x"), headers=[bearer(alice)])
    assert (status, data["code"], headers[b"allow"]) == (405, "method_not_allowed", b"GET, PUT, DELETE")


async def test_upload_size_rules(running, alice, settings):
    settings.STREAMSPACE_UPLOAD_MAX_BYTES = 1000
    status, _, data = await call("PUT", url(running, "big.bin"), headers=[bearer(alice), ("content-length", "1001")])
    assert (status, data["code"], data["limit"]) == (413, "too_large", 1000)
    status, _, data = await call("PUT", url(running, "x.bin"), headers=[bearer(alice)])
    assert (status, data["code"]) == (411, "length_required")
    headers = [bearer(alice), ("transfer-encoding", "chunked")]
    assert (await call("PUT", url(running, "x.bin"), headers=headers))[0] == 411
    status, _, data = await call("PUT", url(running), headers=[bearer(alice), ("content-length", "1")], body=b"x")
    assert (status, data["code"]) == (409, "conflict")  # the home itself is a directory
    status, _, data = await call("DELETE", url(running), headers=[bearer(alice)])
    assert (status, data["code"]) == (400, "invalid_path")


def test_content_disposition_keeps_any_name_safe():
    assert content_disposition("report.pdf") == b"attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
    header = content_disposition('été "x";.txt')
    assert header.startswith(b'attachment; filename="_t_ _x__.txt"; filename*=UTF-8')
    assert b"%C3%A9t%C3%A9%20%22x%22%3B.txt" in header

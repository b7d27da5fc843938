"""Revocation across processes (docs/architecture.md §22): the served control plane
(``python -m streamspace.serve``: the front's byte pipe and the ASGI relay) holds the open
WebSockets, and the revocation is made in this test's process, as another replica's API would
make it; the channel layer over Redis carries it. The "connected now" list is read from Redis
here while the sockets live in the served process."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from sessions_app import sharing
from sessions_app.proxy import connections, presence
from tests.proxy.conftest import bearer, ws_url
from tests.support.ci import unavailable
from tests.support.factories import make_user, share

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _needs_redis():
    if not settings.REDIS_URL:
        unavailable("REDIS_URL is not set: revocation across processes rides the Redis channel layer")


def wait_until_listed(session_id, users: list[str], timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        entries = presence.connected(session_id)
        if sorted(str(e["user"]) for e in entries) == sorted(users):
            return entries
        assert time.monotonic() < deadline, entries
        time.sleep(0.05)


def closed_with(ws) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=10)
    return closed.value.rcvd.code if closed.value.rcvd else 1006


def test_a_revocation_in_another_process_closes_piped_and_relayed_sockets(daphne, session, alice, bob):
    carol = make_user("carol")
    (collaborator,) = share(session, bob, role="collaborator")
    (viewer,) = share(session, carol, role="viewer")
    url = ws_url(daphne, session)
    with (
        ws_connect(url, additional_headers={"Authorization": bearer(bob)}) as piped,
        ws_connect(url, additional_headers={"Authorization": bearer(carol)}) as relayed,
        ws_connect(url, additional_headers={"Authorization": bearer(alice)}) as owners,
    ):
        piped.send("from the collaborator")
        assert piped.recv(timeout=5) == "from the collaborator"
        relayed.send("from the viewer")  # dropped by the relay: never echoed
        owners.send("from the owner")
        assert owners.recv(timeout=5) == "from the owner"
        entries = wait_until_listed(session.pk, ["alice", "bob", "carol"])
        assert {e["user"]: e["role"] for e in entries} == {"alice": "owner", "bob": "collaborator", "carol": "viewer"}

        sharing.revoke(viewer, actor=alice)
        assert closed_with(relayed) == connections.REVOKED_CLOSE_CODE
        sharing.revoke(collaborator, actor=alice)
        assert closed_with(piped) == 1006  # the pipe cuts both sockets: no close frame mid-stream
        owners.send("the owner stays")
        assert owners.recv(timeout=5) == "the owner stays"
        wait_until_listed(session.pk, ["alice"])

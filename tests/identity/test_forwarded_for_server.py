"""The X-Forwarded-For lockout bypass, against the real server as deployments start it.

daphne's ``--proxy-headers`` takes the leftmost X-Forwarded-For entry, which the client
writes: rotating it made every attempt a new client. Under ``python -m streamspace.serve``
the header counts only from ``STREAMSPACE_TRUSTED_PROXIES`` (none here), even with the flag.
"""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from django.contrib.auth.hashers import ScryptPasswordHasher
from django.db import connection

from streamspace.audit.models import AuditEvent
from tests.support import ROOT
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import stop

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DJANGO_SETTINGS_MODULE": "streamspace.settings",
        "STREAMSPACE_TRUSTED_PROXIES": "",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("REDIS_URL", None)  # a cache of its own: no throttle state from earlier runs
    log = tmp_path / "daphne.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamspace.serve", "--proxy-headers", "-b", "127.0.0.1", "-p", str(port)]
            + ["streamspace.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, process, timeout=30)
        yield f"http://127.0.0.1:{port}", log
    finally:
        stop(process)


def test_rotating_forwarded_for_gets_no_token(server, alice):
    base, log = server
    # A hash the server's own PASSWORD_HASHERS knows (the tests' fast MD5 is not among them).
    alice.password = ScryptPasswordHasher().encode("pw-alice", ScryptPasswordHasher().salt())
    alice.save(update_fields=["password"])
    with httpx.Client(base_url=base, timeout=10) as client:

        def login(password: str, spoofed: str) -> httpx.Response:
            return client.post(
                "/api/v1/auth/login",
                json={"username": "alice", "password": password},
                headers={"X-Forwarded-For": spoofed},
            )

        answers = [login(f"wrong-{i}", f"10.66.{i}.1").status_code for i in range(30)]
        right = login("pw-alice", "10.66.200.1")
    assert right.status_code == 429 and "access" not in right.json()
    assert set(answers[:9]) == {401} and set(answers[10:]) == {429}
    # the audit log and the access log name the real peer, never the spoofed addresses
    assert set(AuditEvent.objects.filter(action="user.login_failed").values_list("ip", flat=True)) == {"127.0.0.1"}
    lines = [line for line in log.read_text().splitlines() if '"POST /api/v1/auth/login"' in line]
    assert len(lines) == 31 and all(line.startswith("127.0.0.1:") for line in lines), lines[:3]

"""The per-session stream secrets on the agent's side: the local backend gives them to the
session process as environment variables, and neither its state file nor a failure's log
tail holds them."""

from __future__ import annotations

import json
import os

import pytest

from agent_runtime import logtail
from agent_runtime.backends.base import SessionSpec
from agent_runtime.backends.local import LocalBackend
from tests.support.waits import until

SAME_USER = {"session_user": os.environ["STREAMSPACE_LOCAL_SESSION_USER"]}  # tests/conftest.py
FULL, VIEW = "full-" + "f" * 40, "view-" + "v" * 40
# Writes the stream variables it was given to <home>/stream-env.json, then waits.
DUMP_ENV = (
    "import json, os, sys, time\n"
    "seen = {k: v for k, v in os.environ.items() if k.startswith('STREAMSPACE_STREAM')}\n"
    "open(os.path.join(sys.argv[1], 'stream-env.json'), 'w').write(json.dumps(seen))\n"
    "time.sleep(120)\n"
)


@pytest.fixture
async def backend(tmp_path):
    backend = LocalBackend(agent_id="local", data_dir=tmp_path, options=SAME_USER)
    yield backend
    for item in await backend.inventory():
        await backend.stop(item.session_id, SessionSpec())


def dump_spec(**overrides) -> SessionSpec:
    command = ["{python}", "-c", DUMP_ENV, "{home}"]
    return SessionSpec.parse({"command": command, "user": "alice", "persistent_home": False, **overrides})


async def seen_env(backend: LocalBackend, session_id: str) -> dict[str, str]:
    home = json.loads(backend.state_path.read_text())[session_id]["home"]
    path = os.path.join(home, "stream-env.json")
    await until(lambda: os.path.exists(path) and os.path.getsize(path) > 0, timeout=15, what="the env dump")
    return json.loads(open(path).read())


async def test_the_local_backend_passes_the_secrets_as_env(backend):
    spec = dump_spec(
        stream_secret=FULL, stream_view_secret=VIEW, env={"STREAMSPACE_STREAM_SECRET": "forged by the template"}
    )
    await backend.start("s-secret", spec)
    assert await seen_env(backend, "s-secret") == {
        "STREAMSPACE_STREAM_SECRET": FULL,
        "STREAMSPACE_STREAM_VIEW_SECRET": VIEW,
    }
    state = backend.state_path.read_text()
    assert FULL not in state and VIEW not in state


async def test_a_session_without_secrets_gets_no_stream_variables(backend, monkeypatch):
    monkeypatch.setenv("STREAMSPACE_STREAM_SECRET", "the agent's own")  # never inherited
    await backend.start("s-plain", dump_spec())
    assert await seen_env(backend, "s-plain") == {}


def test_a_failure_log_tail_masks_the_secret_variables():
    output = (
        f"STREAMSPACE_STREAM_SECRET={FULL}\nstream_view_secret: {VIEW}\nAuthorization: Basic c3RyZWFtc3BhY2U6eHh4eHh4\n"
    )
    masked = logtail.tail(output.encode())
    assert FULL not in masked and VIEW not in masked and "c3RyZWFtc3BhY2U6eHh4eHh4" not in masked

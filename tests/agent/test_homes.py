"""Persistent homes are one per exact user name, on every backend, and existing homes stay
with the one user they provably belong to."""

from __future__ import annotations

import json
import os

import pytest

from agent_runtime.backends import docker_objects as objects
from agent_runtime.backends import homes
from agent_runtime.backends.base import SessionSpec
from agent_runtime.backends.local import LocalBackend

# Names the old scheme folded onto one home (alice*: streamspace-home-alice; bob*: ..._corp).
LOOKALIKES = ["alice", "alice_", "alice.", "_alice", "alice-", "alice+", "Alice", "bob@corp", "bob_corp", "bob.corp"]
SAME_USER = {"session_user": os.environ["STREAMSPACE_LOCAL_SESSION_USER"]}  # tests/conftest.py


def test_docker_home_volumes_are_injective():
    names = {user: objects.home_volume_name(user) for user in LOOKALIKES}
    assert len(set(names.values())) == len(LOOKALIKES), names
    assert names["alice"] == "streamspace-home-alice-2bd806c97f0e00af"  # readable, and stable
    assert names["bob@corp"].startswith("streamspace-home-bob-corp-")


def test_home_keys_are_injective_and_safe_everywhere():
    keys = [homes.home_key(user) for user in [*LOOKALIKES, "Ωmega", "ωmega", "x" * 150, "../../etc", ".", "a b"]]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert key == key.lower() and len(key) <= homes.SLUG_MAX + 1 + homes.DIGEST_HEX
        assert all(c.isascii() and (c.isalnum() or c == "-") for c in key), key
        assert not key.startswith("-")
    with pytest.raises(ValueError):
        homes.home_key("")


def test_the_legacy_names_are_what_collided():
    assert {homes.legacy_docker_volume(u) for u in ("alice", "alice_", "alice.", "_alice")} == {
        "streamspace-home-alice"
    }
    assert homes.legacy_docker_volume("bob@corp") == homes.legacy_docker_volume("bob_corp")
    assert homes.legacy_docker_volume("@@@") is None
    assert homes.legacy_local_dir("alice_") == homes.legacy_local_dir("_alice") == "alice"


@pytest.mark.parametrize(
    ("user", "volume_labels", "container_users", "claimed_by", "theirs"),
    [
        ("alice", {}, set(), set(), True),  # the name names alice exactly
        ("alice_", {}, set(), set(), False),  # ...and never alice_
        ("bob@corp", {}, set(), set(), False),  # streamspace-home-bob_corp names bob_corp
        ("bob@corp", {}, {"bob@corp"}, set(), True),  # a container of bob@corp mounts it
        ("alice", {}, {"alice_"}, set(), False),  # alice_'s container mounts it: not alice's
        ("alice", {}, {"alice", "alice_"}, set(), False),  # shared before: no one's
        ("alice", {"streamspace.user": "alice"}, set(), set(), True),
        ("alice", {"streamspace.user": "alice_"}, {"alice"}, set(), False),  # the volume's own label wins
        ("alice", {}, set(), {"alice_"}, False),  # alice_ claimed it first
        ("alice", {}, set(), {"alice"}, True),
    ],
)
def test_who_keeps_a_legacy_docker_volume(user, volume_labels, container_users, claimed_by, theirs):
    legacy = homes.legacy_docker_volume(user)
    assert (
        objects.legacy_home_is_theirs(
            user, legacy, volume_labels=volume_labels, container_users=container_users, claimed_by=claimed_by
        )
        is theirs
    )


# --- the local backend ------------------------------------------------------------------

HOLD = ["/bin/sh", "-c", "exec sleep 60"]


def spec(user: str, **extra) -> SessionSpec:
    return SessionSpec.parse({"command": HOLD, "user": user, "template": "t", **extra})


@pytest.fixture
async def backend(tmp_path):
    backend = LocalBackend(agent_id="local", data_dir=tmp_path, options=SAME_USER)
    yield backend
    for item in await backend.inventory():
        await backend.stop(item.session_id, SessionSpec())


def recorded_home(backend, session_id: str) -> str:
    return json.loads(backend.state_path.read_text())[session_id]["home"]


async def test_local_lookalike_users_get_different_homes(backend):
    for index, user in enumerate(LOOKALIKES):
        await backend.start(f"s{index}", spec(user))
    recorded = {user: recorded_home(backend, f"s{index}") for index, user in enumerate(LOOKALIKES)}
    assert len(set(recorded.values())) == len(LOOKALIKES), recorded


async def test_a_legacy_local_home_goes_to_the_user_it_names_only(backend, tmp_path):
    legacy = tmp_path / "homes" / "alice"
    legacy.mkdir(parents=True)
    (legacy / "notes.txt").write_text("alice's")
    await backend.start("intruder", spec("alice_"))
    intruder_home = tmp_path / "homes" / homes.home_key("alice_")
    assert recorded_home(backend, "intruder") == str(intruder_home) and not (intruder_home / "notes.txt").exists()
    await backend.start("owner", spec("alice"))
    own = tmp_path / "homes" / homes.home_key("alice")
    assert recorded_home(backend, "owner") == str(own)
    assert (own / "notes.txt").read_text() == "alice's" and not legacy.exists()  # renamed: final
    await backend.start("later", spec("_alice"))
    assert not (tmp_path / "homes" / homes.home_key("_alice") / "notes.txt").exists()


async def test_a_legacy_local_home_in_use_by_another_user_is_no_ones(backend, tmp_path):
    legacy = tmp_path / "homes" / "bob_corp"
    legacy.mkdir(parents=True)
    (legacy / "notes.txt").write_text("bob@corp's")
    # A session of bob@corp, recorded before the upgrade, hibernated in the legacy home.
    backend._save({"old": {"state": "hibernated", "port": 1, "home": str(legacy), "spec": {"user": "bob@corp"}}})
    await backend.start("other", spec("bob_corp"))  # the name alone would say bob_corp
    assert not (tmp_path / "homes" / homes.home_key("bob_corp") / "notes.txt").exists()
    await backend.wake("old", spec("bob@corp"))  # the recorded owner keeps it
    own = tmp_path / "homes" / homes.home_key("bob@corp")
    assert recorded_home(backend, "old") == str(own) and (own / "notes.txt").read_text() == "bob@corp's"

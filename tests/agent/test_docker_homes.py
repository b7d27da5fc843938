"""Docker home volumes on the real engine: one per exact user name, and a home volume of an
earlier release stays with the one user it provably belongs to."""

from __future__ import annotations

import pytest

from agent_runtime.backends import docker_objects as objects
from agent_runtime.backends.base import SessionSpec
from agent_runtime.backends.docker import DockerBackend
from tests.support.docker import TEST_IMAGE

pytestmark = pytest.mark.docker


@pytest.fixture
async def backend(docker_agent_id, tmp_path):
    backend = DockerBackend(agent_id=docker_agent_id, data_dir=tmp_path, options={"stop_timeout": "1", "pull": "never"})
    yield backend
    await backend.close()


def spec(user: str, **extra) -> SessionSpec:
    return SessionSpec.parse({"image": TEST_IMAGE, "user": user, "template": "t", "persistent_home": True, **extra})


def home_of(docker_client, session_id: str) -> str:
    container = docker_client.containers.get(f"streamspace-{session_id}")
    return next(m["Name"] for m in container.attrs["Mounts"] if m["Destination"] == "/home/user")


def read_notes(docker_client, volume: str) -> str:
    output = docker_client.containers.run(
        TEST_IMAGE,
        ["sh", "-c", "cat /v/notes.txt 2>/dev/null || echo none"],
        volumes={volume: {"bind": "/v"}},
        remove=True,
    )
    return output.decode().strip()


async def test_lookalike_users_get_their_own_volumes(backend, docker_client, docker_agent_id):
    # Every user name embeds the agent id: the fixture removes the volumes it names.
    users = [
        docker_agent_id,
        f"{docker_agent_id}_",
        f"_{docker_agent_id}",
        f"{docker_agent_id}.",
        f"{docker_agent_id}@x",
    ]
    for index, user in enumerate(users):
        await backend.start(f"{docker_agent_id}-{index}", spec(user))
    mounted = [home_of(docker_client, f"{docker_agent_id}-{index}") for index in range(len(users))]
    assert mounted == [objects.home_volume_name(user) for user in users]
    assert len(set(mounted)) == len(users)
    for user, volume in zip(users, mounted, strict=True):
        assert docker_client.volumes.get(volume).attrs["Labels"]["streamspace.user"] == user


async def test_a_legacy_volume_stays_with_the_user_it_names(backend, docker_client, docker_agent_id):
    owner, lookalike = docker_agent_id, f"_{docker_agent_id}"
    legacy = f"streamspace-home-{docker_agent_id}"  # what earlier releases named both users' homes
    docker_client.volumes.create(legacy)
    docker_client.containers.run(
        TEST_IMAGE, ["sh", "-c", "echo kept > /v/notes.txt"], volumes={legacy: {"bind": "/v"}}, remove=True
    )

    await backend.start(f"{docker_agent_id}-l", spec(lookalike))
    assert home_of(docker_client, f"{docker_agent_id}-l") == objects.home_volume_name(lookalike)
    assert read_notes(docker_client, objects.home_volume_name(lookalike)) == "none"

    await backend.start(f"{docker_agent_id}-o", spec(owner))
    assert home_of(docker_client, f"{docker_agent_id}-o") == legacy  # the owner keeps their data
    pointer = docker_client.volumes.get(objects.home_volume_name(owner)).attrs["Labels"]
    assert pointer["streamspace.user"] == owner and pointer["streamspace.home-legacy"] == legacy

    # Decided once: a new session of the owner follows the record, the lookalike never gets it.
    await backend.stop(f"{docker_agent_id}-o", spec(owner))
    await backend.start(f"{docker_agent_id}-o2", spec(owner))
    assert home_of(docker_client, f"{docker_agent_id}-o2") == legacy
    await backend.stop(f"{docker_agent_id}-l", spec(lookalike))
    await backend.start(f"{docker_agent_id}-l2", spec(lookalike))
    assert home_of(docker_client, f"{docker_agent_id}-l2") == objects.home_volume_name(lookalike)

    # Deleting the owner's home removes the legacy volume and the record, nothing of the lookalike.
    await backend.stop(f"{docker_agent_id}-o2", SessionSpec.parse({"user": owner, "delete_home": True}))
    names = {v.name for v in docker_client.volumes.list(filters={"name": docker_agent_id})}
    assert legacy not in names and objects.home_volume_name(owner) not in names
    assert objects.home_volume_name(lookalike) in names


async def test_a_legacy_volume_mounted_by_another_users_container_is_theirs(backend, docker_client, docker_agent_id):
    """A session created before the upgrade, by a user whose name the old scheme changed."""
    owner, named = f"{docker_agent_id}@corp", f"{docker_agent_id}_corp"
    legacy = f"streamspace-home-{docker_agent_id}_corp"
    # What an earlier release left: a hibernated session of the owner's mounting the legacy name,
    # on the shared network that release used (here one of this test's, removed with its agent).
    network = f"{docker_agent_id}-legacy"
    docker_client.networks.create(network, labels={objects.LABEL_MANAGED_BY: docker_agent_id})
    config = objects.container_config(
        f"{docker_agent_id}-old", spec(owner), agent_id=docker_agent_id, home_volume=legacy, network=network
    )
    docker_client.containers.create(**config)

    await backend.start(f"{docker_agent_id}-n", spec(named))  # the name alone would say it is named's
    assert home_of(docker_client, f"{docker_agent_id}-n") == objects.home_volume_name(named)
    await backend.wake(f"{docker_agent_id}-old", spec(owner))  # the owner's session claims it
    assert (
        docker_client.volumes.get(objects.home_volume_name(owner)).attrs["Labels"]["streamspace.home-legacy"] == legacy
    )
    await backend.stop(f"{docker_agent_id}-old", spec(owner))  # the evidence goes away; the record stays
    await backend.start(f"{docker_agent_id}-n2", spec(owner))
    assert home_of(docker_client, f"{docker_agent_id}-n2") == legacy

"""A deposed leader's Docker launch undoes only what its own calls did (agent_runtime/backends/
docker_fence.py), against the real engine: the mandate is lost at a chosen check of the
launch, and what the successor does in that window runs right there (no sleeps)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import docker.errors
import pytest

from agent_runtime.backends.base import MandateLost, SessionSpec
from agent_runtime.backends.docker import DockerBackend
from agent_runtime.backends.docker_objects import container_name
from tests.support.docker import TEST_IMAGE

pytestmark = pytest.mark.docker

# The mandate checks of a launch of a session without a container, in order; a wake of a
# hibernated container has the last three.
NETWORK, CREATE, AFTER_CREATE, BEFORE_START, START, AFTER_START = range(1, 7)
WAKE_START, WAKE_AFTER_START = 2, 3


class Mandate:
    """The agent as the backend's listener: leads until check number ``lost_at``; at check
    ``acts_at`` (default: ``lost_at``), and only then, ``successor`` runs first: what the new
    leader did in the window before that check."""

    def __init__(self, lost_at: int, successor: Callable[[], None] = lambda: None, *, acts_at: int = 0):
        self.lost_at = lost_at
        self.acts_at = acts_at or lost_at
        self.successor = successor
        self.checks = 0

    async def step(self, session_id: str, step: str, label: str, state: str) -> None:
        return None

    def exited(self, session_id: str, exit_code: int | None) -> None:
        return None

    def leading(self) -> bool:
        self.checks += 1
        if self.checks == self.acts_at:
            self.successor()
        return self.checks < self.lost_at


@pytest.fixture
async def backend(docker_agent_id, tmp_path):
    backend = DockerBackend(agent_id=docker_agent_id, data_dir=tmp_path, options={"stop_timeout": "2", "pull": "never"})
    yield backend
    await backend.close()


def spec_for(agent_id: str) -> SessionSpec:
    return SessionSpec.parse({"image": TEST_IMAGE, "user": agent_id, "template": "t", "persistent_home": False})


def session_containers(docker_client: Any, agent_id: str, session_id: str) -> list[Any]:
    labels = [f"streamspace.managed-by={agent_id}", f"streamspace.session-id={session_id}"]
    return docker_client.containers.list(all=True, filters={"label": labels})


def successor_container(docker_client: Any, agent_id: str, session_id: str) -> Any:
    """A container the new leader created for the session under its deterministic name."""
    return docker_client.containers.create(
        TEST_IMAGE,
        name=container_name(session_id),
        labels={"streamspace.managed-by": agent_id, "streamspace.session-id": session_id},
    )


async def test_a_container_created_after_the_mandate_ended_is_removed(backend, docker_client, docker_agent_id):
    backend.listen(mandate := Mandate(AFTER_CREATE))
    with pytest.raises(MandateLost, match="^not_leader"):
        await backend.start("fence-a", spec_for(docker_agent_id))
    assert mandate.checks == AFTER_CREATE
    assert session_containers(docker_client, docker_agent_id, "fence-a") == []


async def test_a_container_started_after_the_mandate_ended_is_stopped_and_removed(
    backend, docker_client, docker_agent_id
):
    backend.listen(mandate := Mandate(AFTER_START))
    with pytest.raises(MandateLost, match="^not_leader"):
        await backend.start("fence-b", spec_for(docker_agent_id))
    assert mandate.checks == AFTER_START
    assert session_containers(docker_client, docker_agent_id, "fence-b") == []


async def test_a_lost_mandate_before_the_create_creates_nothing(backend, docker_client, docker_agent_id):
    backend.listen(Mandate(CREATE))
    with pytest.raises(MandateLost, match="^not_leader"):
        await backend.start("fence-c", spec_for(docker_agent_id))
    assert session_containers(docker_client, docker_agent_id, "fence-c") == []


async def test_the_name_taken_by_the_successor_is_a_fence_its_container_is_kept(
    backend, docker_client, docker_agent_id
):
    """The successor created the session's container first: this create gets 409, and the
    deposed leader never removes a container it did not create."""
    theirs: list[str] = []

    def create() -> None:  # in the window between the check before the create and the create
        theirs.append(successor_container(docker_client, docker_agent_id, "fence-d").id)

    backend.listen(mandate := Mandate(AFTER_CREATE, create, acts_at=CREATE))
    with pytest.raises(MandateLost, match="^not_leader"):
        await backend.start("fence-d", spec_for(docker_agent_id))
    assert mandate.checks == AFTER_CREATE
    assert [c.id for c in session_containers(docker_client, docker_agent_id, "fence-d")] == theirs


async def test_a_container_the_successor_replaced_is_never_removed(backend, docker_client, docker_agent_id):
    """Between this create and its check the successor removed that container and created its
    own under the same name: the undo goes by the id this create returned, and misses."""

    def replace() -> None:
        docker_client.containers.get(container_name("fence-e")).remove(force=True)
        replaced.append(successor_container(docker_client, docker_agent_id, "fence-e").id)

    replaced: list[str] = []
    backend.listen(Mandate(AFTER_CREATE, replace))
    with pytest.raises(MandateLost, match="^not_leader"):
        await backend.start("fence-e", spec_for(docker_agent_id))
    assert [c.id for c in session_containers(docker_client, docker_agent_id, "fence-e")] == replaced


async def test_a_created_container_the_successor_started_is_kept(backend, docker_client, docker_agent_id):
    """The successor adopted the container this create made (started it as its own): the undo
    removes without force, which the engine refuses for a running container."""
    adopted: list[str] = []

    def adopt() -> None:
        container = docker_client.containers.get(container_name("fence-f"))
        container.start()
        adopted.append(container.id)

    backend.listen(Mandate(AFTER_CREATE, adopt))
    with pytest.raises(MandateLost, match="^not_leader"):
        await backend.start("fence-f", spec_for(docker_agent_id))
    [container] = session_containers(docker_client, docker_agent_id, "fence-f")
    assert (container.id, container.status) == (adopted[0], "running")


async def test_a_wake_after_the_mandate_ended_stops_the_container_again_and_keeps_it(
    backend, docker_client, docker_agent_id
):
    """A hibernated container this wake started is stopped again; it is not this wake's to remove."""
    spec = spec_for(docker_agent_id)
    assert (await backend.start("fence-g", spec)).state == "running"
    assert (await backend.hibernate("fence-g")).state == "hibernated"
    before = docker_client.containers.get(container_name("fence-g")).id
    backend.listen(mandate := Mandate(WAKE_AFTER_START))
    with pytest.raises(MandateLost, match="^not_leader"):
        await backend.wake("fence-g", spec)
    assert mandate.checks == WAKE_AFTER_START  # the start ran
    [container] = session_containers(docker_client, docker_agent_id, "fence-g")
    assert (container.id, container.status) == (before, "exited")


async def test_a_container_the_successor_started_first_is_not_stopped(backend, docker_client, docker_agent_id):
    """The engine answers 304 to a start of a running container: the successor started it
    before this wake's start did, so the wake stops nothing."""
    spec = spec_for(docker_agent_id)
    await backend.start("fence-h", spec)
    await backend.hibernate("fence-h")

    def start() -> None:  # in the window between the check before the start and the start
        docker_client.containers.get(container_name("fence-h")).start()

    backend.listen(mandate := Mandate(WAKE_AFTER_START, start, acts_at=WAKE_START))
    with pytest.raises(MandateLost, match="^not_leader"):
        await backend.wake("fence-h", spec)
    assert mandate.checks == WAKE_AFTER_START
    assert docker_client.containers.get(container_name("fence-h")).status == "running"


def test_removing_a_running_container_without_force_is_refused(docker_client, docker_agent_id):
    """The engine's refusal the undo relies on (docker_fence.undo_launch)."""
    container = successor_container(docker_client, docker_agent_id, "fence-i")
    container.start()
    with pytest.raises(docker.errors.APIError) as refused:
        docker_client.api.remove_container(container.id, force=False)
    assert refused.value.status_code == 409

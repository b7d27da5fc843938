"""The users' home volumes on one Docker engine (:class:`HomeVolumes`).

Each user's home is the volume ``streamspace-home-<slug>-<digest>`` (:mod:`.homes`: one per
exact user name), created by the agent with the label ``streamspace.user=<exact user name>``.
Homes of earlier releases were named ``streamspace-home-<cleaned name>`` and were shared by
users whose names differ only by ``_ . - @ +``. Such a legacy volume is kept as the home of the
one user it provably belongs to (:func:`.docker_objects.legacy_home_is_theirs`: its own owner
label, else the owner labels of the containers that mount it, else its name naming exactly
that user), and of no one else. The decision is made once per user and recorded: the user's
own volume is created as a pointer labelled ``streamspace.home-legacy=<legacy volume>``, which
later starts follow and which stops any other user from adopting the same legacy volume.
Everyone else gets a fresh home of their own; docs/persistent-homes.md tells operators how to
hand a legacy volume to a user by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

try:  # optional dependency: pip install streamspace-agent[docker]
    import docker
    import docker.errors
except ImportError:
    docker = None

from agent_runtime.backends import docker_objects as objects
from agent_runtime.backends import homes
from agent_runtime.backends.base import BackendError
from agent_runtime.backends.docker_networks import Runner

log = logging.getLogger(__name__)


class HomeVolumes:
    """Finds, creates and removes the home volumes of one agent's users.

    ``run``: the backend's executor call (blocking SDK calls off the event loop, API errors
    as :class:`BackendError`, ``NotFound`` passed through); ``client``: the engine client.
    """

    def __init__(self, run: Runner, client: Callable[[], Awaitable[Any]], agent_id: str) -> None:
        self._run = run
        self._client = client
        self.agent_id = agent_id

    async def get(self, name: str) -> Any | None:
        """The volume called ``name``, or None."""
        client = await self._client()
        try:
            return await self._run(client.volumes.get, name)
        except docker.errors.NotFound:
            return None

    async def for_user(self, username: str) -> str:
        """The volume holding ``username``'s home, deciding (once) whether a legacy one is theirs.

        Creates the user's own labelled volume when it is missing: as their home, or as the
        pointer to the legacy volume they keep.
        """
        own_name = objects.home_volume_name(username)
        own = await self.get(own_name)
        if own is not None:
            legacy = (own.attrs.get("Labels") or {}).get(objects.LABEL_HOME_LEGACY)
            if legacy and await self.get(legacy) is not None:
                return legacy
            return own_name
        adopted = await self._adoptable_legacy(username)
        client = await self._client()
        labels = objects.home_volume_labels(username, self.agent_id, legacy=adopted)
        await self._run(client.volumes.create, name=own_name, driver="local", labels=labels)
        if adopted:
            log.info("legacy home kept", extra={"user": username, "volume": adopted})
            return adopted
        return own_name

    async def _adoptable_legacy(self, username: str) -> str | None:
        """The legacy home volume of ``username`` if it exists and is provably theirs."""
        legacy = homes.legacy_docker_volume(username)
        volume = await self.get(legacy) if legacy else None
        if volume is None:
            return None
        client = await self._client()
        pointers = await self._run(client.volumes.list, filters={"label": f"{objects.LABEL_HOME_LEGACY}={legacy}"})
        mounting = await self._run(
            client.containers.list, all=True, filters={"label": f"{objects.LABEL_HOME}={legacy}"}
        )
        theirs = objects.legacy_home_is_theirs(
            username,
            legacy,
            volume_labels=volume.attrs.get("Labels") or {},
            container_users={(c.labels or {}).get(objects.LABEL_USER, "") for c in mounting},
            claimed_by={(v.attrs.get("Labels") or {}).get(objects.LABEL_USER, "") for v in pointers},
        )
        return legacy if theirs else None

    async def delete_home(self, username: str, mounted: str | None) -> None:
        """Remove the user's home: the volume the container mounted, the user's own volume
        and the legacy volume it points to (never another user's)."""
        names = [mounted] if mounted else []
        if username:
            own_name = objects.home_volume_name(username)
            own = await self.get(own_name)
            if own is not None:
                legacy = (own.attrs.get("Labels") or {}).get(objects.LABEL_HOME_LEGACY)
                names += [legacy, own_name] if legacy else [own_name]
        for name in dict.fromkeys(names):
            await self.delete(name)

    async def delete(self, name: str | None) -> None:
        """Remove the volume ``name`` if it exists; one still mounted by another of the
        user's sessions is kept (logged)."""
        if not name:
            return
        client = await self._client()
        try:
            volume = await self._run(client.volumes.get, name)
            await self._run(volume.remove)
        except docker.errors.NotFound:
            pass
        except BackendError as exc:
            log.warning("home volume kept", extra={"volume": name, "reason": str(exc)})

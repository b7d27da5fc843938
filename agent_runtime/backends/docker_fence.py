"""Fencing a Docker launch: the engine's own answers tell which container a call changed.

A leader checks its mandate immediately before each side-effecting call of a start or wake
and right after it returns (:meth:`agent_runtime.backends.base.Backend.require_mandate`). If
the mandate ended meanwhile, another replica may already lead and have acted on the session,
so the deposed leader undoes only what its own calls did, identified by what only it knows:

* **create**: the container id the engine returned to this call. A create that finds the
  deterministic name taken gets 409 Conflict: that container is another replica's (or an
  earlier launch's), never this call's to undo. The undo removes the container by that id and
  without ``force``: the engine refuses to remove a running container, so a container the
  successor started meanwhile (adopted) is kept, and a container the successor removed and
  created again under the same name has another id and is never touched.
* **start**: the engine answers 204 to the call that started a container and 304 to one that
  found it running already; only the 204 caller stops it again.

These are blocking Docker SDK calls (the backend runs them in its thread pool).
"""

from __future__ import annotations

import logging
from typing import Any

try:  # optional dependency, as in .docker
    import docker.errors
except ImportError:
    docker = None

log = logging.getLogger(__name__)


def start_container(client: Any, container_id: str) -> bool:
    """Start the container; True if this call started it (204), False if it was running (304)."""
    api = client.api
    response = api._post(api._url("/containers/{0}/start", container_id))
    api._raise_for_status(response)
    return response.status_code != 304


def undo_launch(client: Any, *, created: str | None, started: str | None, stop_timeout: int) -> list[str]:
    """Undo a deposed leader's own calls: stop the container it started (``started``: its id),
    remove the container it created (``created``: its id) unless it runs. Returns what it did
    (``stopped``, ``removed``, ``kept running``); the engine's refusals are logged, not raised."""
    done: list[str] = []
    api = client.api
    if started:
        try:
            api.stop(started, timeout=stop_timeout)
            done.append("stopped")
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            log.warning("fenced launch: stop refused", extra={"container": started, "error": str(exc)})
    if created:
        try:
            api.remove_container(created, force=False)
            done.append("removed")
        except docker.errors.NotFound:
            pass  # removed by the replica that leads now
        except docker.errors.APIError as exc:  # 409: running, someone else started it: theirs now
            log.warning("fenced launch: container kept", extra={"container": created, "error": str(exc)})
            done.append("kept running")
    return done

"""Whether an agent can serve a template now, and if not why: the one rule behind the
catalog's "unavailable" badges, the API's ``availability`` field and the launch refusals.

The rule reads what placement reads for each candidate agent (``sessions_app.placement``):
whether any replica is connected, how many sessions the agent runs and the CPU and memory
they hold, and the ``capacity`` its
leader (else a connected follower) last reported (``agent_runtime.protocol.Capacity``).
Nothing here queries the database. An agent whose replicas are all followers is still
available: during a leader failover its commands wait in ``pending`` and go out when the
new leader registers, so launches are not refused for the length of a lease.

Refusal codes, in the order a launch tries them: ``no_agent`` (503: no connected agent for
the platform), ``no_capacity`` (503: every agent that could run it is at its session limit
or lacks the CPU or memory the session asks for, counted against what the agent reported),
``image_missing`` (409: the image is not on the host and the agent does not pull),
``feature_missing`` (409: the host lacks what the template needs, such as a desktop).
When several agents fail for different reasons, the reason shown is that of the agent
closest to serving it (full, then missing image or feature, then not connected).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from agent_runtime.images import missing_image_hint
from agent_runtime.protocol import FEATURE_DESKTOP, image_key
from streamspace.api.errors import Conflict, ServiceError, Unavailable

NO_AGENT = "no_agent"
NO_CAPACITY = "no_capacity"
IMAGE_MISSING = "image_missing"
FEATURE_MISSING = "feature_missing"
TEMPLATE_DISABLED = "template_disabled"

# How close a refused agent is to serving the template (higher: closer).
_CLOSENESS = {NO_AGENT: 0, FEATURE_MISSING: 1, IMAGE_MISSING: 1, NO_CAPACITY: 2}

# What to do about a missing feature, by feature name.
FEATURE_HINTS = {
    FEATURE_DESKTOP: (
        "the local agent's host lacks what a desktop needs (Xvfb, a window manager, a terminal and selkies). "
        "Install them there with `make desktop-deps` (Debian: `sudo apt-get install xvfb openbox xterm` "
        "and `pip install selkies`); the catalog offers it within seconds."
    ),
}


class NoAgent(Unavailable):
    code = NO_AGENT


class NoCapacity(Unavailable):
    code = NO_CAPACITY


class ImageMissing(Conflict):
    code = IMAGE_MISSING


class FeatureMissing(Conflict):
    code = FEATURE_MISSING


_ERRORS: dict[str, type[ServiceError]] = {
    NO_AGENT: NoAgent,
    NO_CAPACITY: NoCapacity,
    IMAGE_MISSING: ImageMissing,
    FEATURE_MISSING: FeatureMissing,
}


@dataclass(frozen=True)
class Availability:
    """A template's availability: ``code`` and ``reason`` are empty when it is available."""

    available: bool
    code: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"available": self.available, "code": self.code, "reason": self.reason}

    def error(self) -> ServiceError:
        """The launch refusal carrying this code and reason (an unavailable template only)."""
        if self.code == TEMPLATE_DISABLED:
            return ServiceError(self.reason, code=TEMPLATE_DISABLED)
        return _ERRORS[self.code](self.reason)


AVAILABLE = Availability(True)


class TemplateLike(Protocol):
    slug: str
    platform: str
    image: str
    requires: list[str]
    enabled: bool
    default_cpu_millicores: int
    default_memory_mb: int


class CandidateLike(Protocol):
    """An enabled agent as placement reads it (``sessions_app.placement`` annotates these)."""

    agent_id: str
    platform: str
    has_leader: bool
    has_replica: bool
    load: int
    cpu_used: int
    memory_used: int
    leader_capacity: Any


def platforms_of(template_platform: str) -> tuple[str, ...]:
    """The agent platforms that may run a template ('' = any image platform)."""
    return (template_platform,) if template_platform else ("docker", "kubernetes")


def capacity_of(agent: CandidateLike) -> Mapping[str, Any]:
    """The leader's last capacity report as a dict (the database hands JSON back as text on
    some backends); an empty dict when nothing usable was reported."""
    raw = getattr(agent, "leader_capacity", None)
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, Mapping) else {}


def refusal(
    template: TemplateLike, agent: CandidateLike, *, cpu: int | None = None, memory: int | None = None
) -> Availability | None:
    """Why ``agent`` cannot serve ``template`` now, or None when it can.

    ``cpu``/``memory``: what the session asks for (default: the template's defaults). A
    capacity field the agent did not report (or reported as 0) restricts nothing (an older
    agent, or one whose engine could not list its images).
    """
    if not agent.has_replica:
        return Availability(
            False,
            NO_AGENT,
            f"No {agent.platform} agent is connected (the agent {agent.agent_id} is registered but offline); "
            "start it or ask an operator.",
        )
    capacity = capacity_of(agent)
    limit = _int(capacity.get("sessions"))
    if limit > 0 and agent.load >= limit:
        return Availability(
            False,
            NO_CAPACITY,
            f"The agent {agent.agent_id} runs its maximum of {limit} session{'s' if limit != 1 else ''}; "
            "try again when one ends.",
        )
    for name, unit, used, wanted in (
        ("cpu_millicores", "millicores of CPU", agent.cpu_used, cpu or template.default_cpu_millicores),
        ("memory_mb", "MB of memory", agent.memory_used, memory or template.default_memory_mb),
    ):
        total = _int(capacity.get(name))
        if total > 0 and (used or 0) + wanted > total:
            free = max(total - (used or 0), 0)
            return Availability(
                False,
                NO_CAPACITY,
                f"The agent {agent.agent_id} has {free} of its {total} {unit} free and this session needs "
                f"{wanted}; try again when a session ends, or ask for less.",
            )
    features = capacity.get("features")
    if isinstance(features, list):
        missing = [name for name in template.requires or [] if name not in features]
        if missing:
            hint = FEATURE_HINTS.get(missing[0]) or f"the agent's host does not offer {', '.join(missing)}."
            return Availability(False, FEATURE_MISSING, _cap(hint))
    images = capacity.get("images")
    pulls = capacity.get("pulls_images") is not False
    if template.image and isinstance(images, list) and not pulls and image_key(template.image) not in images:
        return Availability(
            False,
            IMAGE_MISSING,
            f"The image {template.image} is not on the host of agent {agent.agent_id}, which does not pull "
            f"images. {missing_image_hint(template.image)}",
        )
    return None


def decide(
    template: TemplateLike,
    candidates: Iterable[CandidateLike],
    *,
    cpu: int | None = None,
    memory: int | None = None,
) -> tuple[Any, Availability]:
    """The first candidate (in placement order) that can serve ``template`` now with
    :data:`AVAILABLE`, or ``None`` with the reason of the candidate closest to serving it."""
    if not template.enabled:
        return None, Availability(False, TEMPLATE_DISABLED, f"The template {template.slug} is disabled.")
    best: Availability | None = None
    for agent in candidates:
        why = refusal(template, agent, cpu=cpu, memory=memory)
        if why is None:
            return agent, AVAILABLE
        if best is None or _CLOSENESS[why.code] > _CLOSENESS[best.code]:
            best = why
    if best is None:
        wanted = template.platform or "docker or kubernetes"
        best = Availability(False, NO_AGENT, f"No agent is registered for {wanted}; ask an operator to add one.")
    return None, best


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]

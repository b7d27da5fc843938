"""The steps of one launch (start or wake) of one session, timed as the agent sees them.

A backend reports steps by name (``agent_runtime.protocol.STEP_*``) while it starts a
workload; the command executor adds the steps after it (waiting for the stream, ready). A
step reported again under the same name updates that step (its label, its state) and keeps
its start, so "Creating the container" → "Starting the container" → "Container started" is
one ``workload`` step whose duration covers all three. A new name finishes the step before
it (``done``, if it was still active). Times come from the monotonic clock, relative to the
launch's beginning, so they survive clock changes and mean the same on every host.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from agent_runtime.protocol import PROGRESS_MAX_STEPS, ProgressStep


@dataclass
class _Step:
    step: str
    label: str
    state: str
    began: float
    ended: float | None = None


class LaunchProgress:
    """One launch's steps. ``state_name``: the session state its progress frames carry
    (``starting`` for a start, ``waking`` for a wake)."""

    def __init__(self, state_name: str, *, clock: Callable[[], float] = time.monotonic):
        self.state_name = state_name
        self._clock = clock
        self._began = clock()
        self._steps: list[_Step] = []

    def update(self, step: str, label: str, state: str = "active") -> None:
        """Record that the launch is at ``step`` (``state``: active, done or failed)."""
        now = self._clock()
        last = self._steps[-1] if self._steps else None
        if last is not None and last.step == step:
            last.label, last.state = label, state
            last.ended = None if state == "active" else now
            return
        if last is not None and last.ended is None:
            last.state, last.ended = "done", now
        self._steps.append(_Step(step, label, state, now, None if state == "active" else now))
        del self._steps[:-PROGRESS_MAX_STEPS]

    def fail(self, label: str) -> None:
        """The launch failed: its active step (or else its last one) is marked failed with ``label``."""
        if not self._steps:
            return
        last = self._steps[-1]
        last.label, last.state = label, "failed"
        last.ended = last.ended if last.ended is not None else self._clock()

    @property
    def current(self) -> str | None:
        """The name of the step the launch is in, while one is active."""
        if self._steps and self._steps[-1].ended is None:
            return self._steps[-1].step
        return None

    def steps(self) -> list[ProgressStep]:
        """The steps so far, as the protocol sends them."""
        return [
            ProgressStep(
                step=s.step,
                label=s.label,
                state=s.state,
                at_s=round(s.began - self._began, 3),
                duration_s=None if s.ended is None else round(s.ended - s.began, 3),
            )
            for s in self._steps
        ]

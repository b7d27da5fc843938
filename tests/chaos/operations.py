"""A user's stream of launches, stops, hibernations and wakes through the load balancer, and
the ledger of what each session's last accepted request asked for.

A request answered 2xx was accepted; 4xx was refused (the session's target is unchanged). A
request whose answer was lost (5xx from a dying replica or database, a dropped connection) is
resolved by reading the session afterwards: only this stream changes its sessions, so a state
on the request's path (``hibernating``/``hibernated`` after a hibernate, ...) means it was
applied. A launch whose answer was lost has no id to follow: sessions the stream never heard
of are adopted at the end with the target ``running``."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

# request -> (method, path suffix, the session's target state, the states on its path)
REQUESTS = {
    "stop": ("DELETE", "", "stopped", {"stopping", "stopped"}),
    "hibernate": ("POST", "/hibernate", "hibernated", {"hibernating", "hibernated"}),
    "wake": ("POST", "/wake", "running", {"waking", "running"}),
}
AMBIGUOUS = "ambiguous"


@dataclass
class Ledger:
    target: dict[str, str] = field(default_factory=dict)  # session id -> state its last accepted request asked for
    template: dict[str, str] = field(default_factory=dict)
    outcomes: Counter = field(default_factory=Counter)  # (request, outcome) -> count
    refusals: Counter = field(default_factory=Counter)  # error code -> count
    lost_launches: int = 0


@dataclass
class OperationStream:
    client: httpx.AsyncClient
    templates: list[str]
    ledger: Ledger
    seed: int = 17
    busy: set[str] = field(default_factory=set)

    async def _call(self, method: str, path: str, **kwargs) -> httpx.Response | None:
        try:
            return await self.client.request(method, path, **kwargs)
        except httpx.HTTPError:
            return None

    async def _state(self, session_id: str, deadline_s: float = 60) -> str | None:
        """The session's state as the API reads it, retried while the API is unreachable."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            response = await self._call("GET", f"/api/v1/sessions/{session_id}")
            if response is not None and response.status_code == 200:
                return response.json()["state"]
            await asyncio.sleep(0.25)
        return None

    def _record(self, request: str, response: httpx.Response | None) -> str:
        if response is None or response.status_code >= 500:
            outcome = AMBIGUOUS
        elif response.status_code < 300:
            outcome = "accepted"
        else:
            outcome = "refused"
            try:
                self.ledger.refusals[response.json().get("code", str(response.status_code))] += 1
            except ValueError:
                self.ledger.refusals[str(response.status_code)] += 1
        self.ledger.outcomes[(request, outcome)] += 1
        return outcome

    async def launch(self, rng: random.Random) -> None:
        template = rng.choice(self.templates)
        response = await self._call("POST", "/api/v1/sessions", json={"template": template, "persistent_home": False})
        if self._record("launch", response) == "accepted":
            session_id = response.json()["id"]
            self.ledger.target[session_id] = "running"
            self.ledger.template[session_id] = template
        elif response is None or response.status_code >= 500:
            self.ledger.lost_launches += 1

    async def act(self, rng: random.Random, session_id: str) -> None:
        state = await self._state(session_id, deadline_s=5)
        if state == "running":
            request = rng.choice(["hibernate", "hibernate", "stop"])
        elif state == "hibernated":
            request = rng.choice(["wake", "wake", "stop"])
        elif state in ("stopped", "failed", None):
            return
        else:  # in a transition: a stop is always allowed, the others would be refused
            request = rng.choice(["stop", "hibernate", "wake"])
        method, suffix, target, path_states = REQUESTS[request]
        response = await self._call(method, f"/api/v1/sessions/{session_id}{suffix}")
        outcome = self._record(request, response)
        if outcome == AMBIGUOUS:
            after = await self._state(session_id)
            outcome = "accepted" if after in path_states else "refused"
            self.ledger.outcomes[(request, f"{AMBIGUOUS}->{outcome}")] += 1
        if outcome == "accepted":
            self.ledger.target[session_id] = target

    async def run(self, worker: int, until: float, max_live: int) -> None:
        """One worker: an operation every 0.3–0.8 s until ``until`` (monotonic); launches while
        fewer than ``max_live`` of the stream's sessions are meant to be up (and sometimes past
        it, so the quota is asked to refuse)."""
        rng = random.Random(self.seed * 100 + worker)
        while time.monotonic() < until:
            live = [sid for sid, target in self.ledger.target.items() if target != "stopped" and sid not in self.busy]
            if not live or len(live) < max_live and rng.random() < 0.5 or rng.random() < 0.1:
                await self.launch(rng)
            else:
                session_id = rng.choice(live)
                self.busy.add(session_id)
                try:
                    await self.act(rng, session_id)
                finally:
                    self.busy.discard(session_id)
            await asyncio.sleep(rng.uniform(0.3, 0.8))


@dataclass
class Probe:
    """An authenticated read through the load balancer every 0.2 s (3 s timeout): when the API
    answered, and why it did not (status code or exception)."""

    client: httpx.AsyncClient
    samples: list[tuple[float, bool]] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)

    async def run(self, until: float) -> None:
        while time.monotonic() < until:
            try:
                status = (await self.client.get("/api/v1/sessions", timeout=3)).status_code
                ok, reason = status == 200, str(status)
            except httpx.HTTPError as exc:
                ok, reason = False, type(exc).__name__
            self.samples.append((time.monotonic(), ok))
            if not ok:
                self.reasons[reason] += 1
            await asyncio.sleep(0.2)

    def failures(self) -> list[tuple[float, float]]:
        """Each run of failed answers: (first failure, seconds until the next good answer)."""
        runs, began = [], None
        for moment, ok in self.samples:
            if not ok and began is None:
                began = moment
            elif ok and began is not None:
                runs.append((began, moment - began))
                began = None
        if began is not None:
            runs.append((began, float("inf")))
        return runs

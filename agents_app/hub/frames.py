"""An agent's ``ack``, ``result`` and ``session_status`` frames, applied in bursts
(docs/architecture.md §7.5).

A burst of launches makes an agent send three such frames per session within a second.
Applied one at a time, each costs a hop to Channels' database thread and a transaction of
its own, and every database round trip of that thread waits for the GIL behind the API's
request threads; the connection also read its next frame (and forwarded the next
``command`` to its agent) only once the previous frame was applied. The consumer therefore
queues these frames, and :func:`apply` runs everything queued while the previous call ran,
in one thread hop and one transaction:

* in arrival order, with a run of consecutive ``ack`` frames written by one UPDATE; the
  error replies (an unknown command or session, a refused endpoint) in the same order;
* if anything else fails (a database error, a deadlock with a bulk stop holding a session
  a later frame locks), the batch's transaction is rolled back and each frame is applied
  again in a transaction of its own, as unbatched, so one bad frame costs only itself;
* the announcements of the changes (portal broadcasts, events) are collected by the caller
  (:func:`streamspace.fanout.run_deferred`) and go out behind the frame path (§7.4); a
  rolled-back batch announces nothing (its ``on_commit`` callbacks are discarded).

Every step is safe to run twice for the same frame (:mod:`agents_app.hub.rows`), which is
what makes the fallback sound.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction

from agent_runtime import protocol
from agents_app.hub import rows
from agents_app.models import Agent
from agents_app.signals import UnknownSession

log = logging.getLogger(__name__)

MAX_BATCH = 200  # frames per call: a transaction's locks are held for a bounded time


@dataclass(frozen=True, slots=True)
class Reply:
    """An ``error`` frame to send back for one applied frame."""

    code: str
    message: str
    reply_to: str | None


def internal_error(frame: protocol.Frame) -> Reply:
    """The reply to a frame the control plane failed on."""
    return Reply("internal_error", f"the control plane could not process {frame.type}", frame.id)


def apply(agent: Agent, frames: list[protocol.Frame]) -> list[Reply]:
    """Apply ``frames`` (``ack``, ``result`` and ``session_status`` from ``agent``'s
    connection) in order, in one transaction when it can (see the module docstring); the
    error replies, in frame order."""
    if len(frames) > 1:
        try:
            with transaction.atomic():
                return _apply_batch(agent, frames)
        except Exception:
            log.warning(
                "a batch of %d frames from %s failed; applying them one by one",
                len(frames),
                agent.agent_id,
                exc_info=True,
            )
    replies = []
    for frame in frames:
        try:
            with transaction.atomic():
                reply = _apply_one(agent, frame)
        except Exception:
            log.exception("hub failed on %s frame from %s", frame.type, agent.agent_id)
            reply = internal_error(frame)
        if reply is not None:
            replies.append(reply)
    return replies


def _apply_batch(agent: Agent, frames: list[protocol.Frame]) -> list[Reply]:
    replies = []
    acks: list[str] = []
    for frame in frames:
        if frame.type == "ack":
            acks.append(frame.payload.command_id)
            continue
        if acks:
            rows.acknowledge_many(agent, acks)
            acks = []
        reply = _apply_one(agent, frame)
        if reply is not None:
            replies.append(reply)
    if acks:
        rows.acknowledge_many(agent, acks)
    return replies


def _apply_one(agent: Agent, frame: protocol.Frame) -> Reply | None:
    """One frame, in the caller's transaction; what the agent should hear of it, if anything."""
    payload = frame.payload
    if frame.type == "ack":
        rows.acknowledge(agent, payload.command_id)
        return None
    if frame.type == "result":
        if rows.complete(agent, payload) is None:
            return Reply("unknown_command", f"no command {payload.command_id}", frame.id)
        return None
    try:
        rows.apply_status(agent, payload)  # a receiver's refusal leaves the transaction usable
    except UnknownSession:
        return Reply("unknown_session", f"no session {payload.session_id} on this agent", frame.id)
    except rows.EndpointRefused as exc:  # applied, without the endpoint
        return Reply("endpoint_refused", str(exc), frame.id)
    return None

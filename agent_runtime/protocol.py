"""The agent <-> control-plane protocol (docs/architecture.md §6): one source of truth.

Every frame is a JSON text message ``{"type": str, "id": str, "ts": float, "payload": {...}}``.
Payloads are strict msgspec structs: unknown types, missing fields and wrong types are
rejected with :class:`ProtocolError` (the hub answers with an ``error`` frame). This module
must not import Django: the agent and the control plane both use it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import msgspec

MAX_FRAME_BYTES = 1024 * 1024  # larger frames close the socket (1009)
PROTOCOL_VERSION = "1"
# Where an agent's hub socket connects on the control plane, and where it opens the control
# plane's side of a tunnel (``TUNNEL_PATH + stream_id``, the URL a ``tunnel_open`` carries).
CONNECT_PATH = "/api/v1/agents/connect"
TUNNEL_PATH = "/api/v1/agents/tunnel/"

Platform = Literal["docker", "kubernetes", "local"]
SessionStateName = Literal[
    "pending", "starting", "running", "hibernating", "hibernated", "waking", "stopping", "stopped", "failed"
]
Action = Literal["start_session", "stop_session", "hibernate_session", "wake_session"]

# A failed workload's output travels with its failure (``SessionStatus.log_tail``): the last
# LOG_TAIL_MAX_LINES lines, at most LOG_TAIL_MAX_BYTES bytes of UTF-8, secrets masked by the agent.
LOG_TAIL_MAX_BYTES = 8192
LOG_TAIL_MAX_LINES = 100
# Launch progress (``SessionStatus.progress``): at most PROGRESS_MAX_STEPS steps per launch.
PROGRESS_MAX_STEPS = 16
# Step names agents report, in the order a launch passes them (a backend reports the ones
# that apply to it; other names are allowed and shown by their label):
STEP_IMAGE = "image"  # the image is present, or is being pulled
STEP_WORKLOAD = "workload"  # the container / pod / process is being created and started
STEP_STREAM = "stream"  # waiting for the session's port to answer
STEP_READY = "ready"  # the session streams
# A step's state: "active" (running now; ``duration_s`` is None), "done" or "failed".
STEP_STATES = ("active", "done", "failed")


# The per-session stream secrets (docs/architecture.md §17). The control plane creates them
# at launch and sends them inside the start and wake specs under these keys; the agent gives
# them to the workload as the environment variables below (only when they are set), and the
# session's streaming server (selkies) requires HTTP basic auth as STREAM_AUTH_USER with
# either one: the full secret for control, the view secret for viewing only. The proxy
# presents the same credentials upstream, so nothing that bypasses it can use the stream.
SPEC_STREAM_SECRET = "stream_secret"
SPEC_STREAM_VIEW_SECRET = "stream_view_secret"
SPEC_SECRET_KEYS = (SPEC_STREAM_SECRET, SPEC_STREAM_VIEW_SECRET)
ENV_STREAM_SECRET = "STREAMSPACE_STREAM_SECRET"
ENV_STREAM_VIEW_SECRET = "STREAMSPACE_STREAM_VIEW_SECRET"
STREAM_AUTH_USER = "streamspace"


def redacted_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A command spec fit to show or log: the stream secrets are masked."""
    return {key: ("[REDACTED]" if key in SPEC_SECRET_KEYS and value else value) for key, value in spec.items()}


class ProtocolError(ValueError):
    """A frame that does not follow the protocol; ``code`` goes into the ``error`` frame."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Payload(msgspec.Struct, forbid_unknown_fields=False):
    """Base of every payload. Unknown extra fields are ignored (forward compatibility)."""


# The most image references a ``capacity`` lists; a host with more reports ``images=None``.
MAX_REPORTED_IMAGES = 500
# ``Capacity.features`` names: what a host offers beyond running a template's command or image.
FEATURE_DESKTOP = "desktop"  # Xvfb, a window manager, a terminal and selkies (agent_runtime/desktop.py)


class Capacity(Payload):
    """What an agent offers, sent in ``register`` and in every heartbeat.

    The control plane decides from it whether the agent can serve a template now. Every
    field after ``sessions`` is optional and defaults to "not reported", which the control
    plane reads as "no restriction known": an agent that predates a field is never ruled out
    by it.
    """

    cpu_millicores: int = 0
    memory_mb: int = 0
    # The most sessions this agent accepts at once (``--max-sessions``); 0 = no limit.
    sessions: int = 0
    # What this host can run beyond the backend's basics (``FEATURE_*`` names); templates
    # name the features they need. None = not reported.
    features: list[str] | None = None
    # The session images present on the host, as :func:`image_key` forms (at most
    # ``MAX_REPORTED_IMAGES``). None = not reported (not an image backend, too many, or the
    # engine could not be asked).
    images: list[str] | None = None
    # Whether a missing image is pulled when a session starts (then a missing image does not
    # make a template unavailable).
    pulls_images: bool = True


class InventoryItem(Payload):
    session_id: str
    state: SessionStateName
    streaming_ready: bool = False
    streaming_port: int | None = None
    endpoint: str | None = None
    # A workload that is not running: its exit status when the backend knows it (a process's
    # exit code, 128 + N for a signal N; a container's exit code), else None.
    exit_code: int | None = None


class ProgressStep(Payload):
    """One step of a launch (start or wake) as the agent saw it.

    ``at_s``: when the step began, in seconds since the launch began (the agent's monotonic
    clock, so the control plane's clock does not matter); ``duration_s``: how long it took,
    None while it is ``active``. ``state`` is one of :data:`STEP_STATES`; a receiver treats
    another value as ``done`` (a newer agent may know more states).
    """

    step: str
    label: str = ""
    state: str = "done"
    at_s: float = 0.0
    duration_s: float | None = None


# --- agent -> control plane ----------------------------------------------------------------
class Register(Payload):
    agent_id: str
    instance_id: str
    platform: Platform
    version: str
    hostname: str
    is_leader: bool
    capacity: Capacity = msgspec.field(default_factory=Capacity)
    sessions: list[InventoryItem] = msgspec.field(default_factory=list)


class Heartbeat(Payload):
    is_leader: bool
    active_sessions: int = 0
    capacity: Capacity = msgspec.field(default_factory=Capacity)


class Ack(Payload):
    command_id: str


class Result(Payload):
    command_id: str
    ok: bool
    error: str | None = None
    data: dict[str, Any] | None = None


class SessionStatus(Payload):
    """A session's state as its agent sees it.

    The optional fields below came after the first version of the protocol; a receiver that
    does not know them ignores them, and an agent that does not send them gets the defaults:

    * ``exit_code`` and ``log_tail`` travel with a ``failed`` state: the workload's exit
      status (None when unknown) and the last lines of its output (bounded by
      :data:`LOG_TAIL_MAX_BYTES` and :data:`LOG_TAIL_MAX_LINES`, secrets masked).
    * ``progress``: every step of the session's current launch so far (at most
      :data:`PROGRESS_MAX_STEPS`), replacing what an earlier frame said; None leaves the
      receiver's copy as it is. While a start (wake) runs, the agent sends ``starting``
      (``waking``) frames that carry only progress.
    """

    session_id: str
    state: SessionStateName
    streaming_ready: bool = False
    streaming_port: int | None = None
    endpoint: str | None = None
    message: str | None = None
    exit_code: int | None = None
    log_tail: str = ""
    progress: list[ProgressStep] | None = None


class Leader(Payload):
    is_leader: bool


# --- control plane -> agent ----------------------------------------------------------------
class Registered(Payload):
    heartbeat_interval_s: float
    instance_id: str


class Command(Payload):
    command_id: str
    action: str  # validated by the agent so that an unknown action gets a failed ``result``
    session_id: str
    spec: dict[str, Any] = msgspec.field(default_factory=dict)
    attempt: int = 1


class TunnelOpen(Payload):
    stream_id: str
    session_id: str
    port: int
    url: str = ""  # the replica's tunnel URL (POD_URL + /api/v1/agents/tunnel/<stream_id>)


class Error(Payload):
    code: str
    message: str


AGENT_MESSAGES: dict[str, type[Payload]] = {
    "register": Register,
    "heartbeat": Heartbeat,
    "ack": Ack,
    "result": Result,
    "session_status": SessionStatus,
    "leader": Leader,
}
CONTROL_PLANE_MESSAGES: dict[str, type[Payload]] = {
    "registered": Registered,
    "command": Command,
    "tunnel_open": TunnelOpen,
    "error": Error,
}
_TYPE_OF: dict[type[Payload], str] = {cls: name for name, cls in {**AGENT_MESSAGES, **CONTROL_PLANE_MESSAGES}.items()}


class Envelope(msgspec.Struct):
    type: str
    id: str = ""
    ts: float = 0.0
    payload: dict[str, Any] = msgspec.field(default_factory=dict)


class Frame(msgspec.Struct):
    """A decoded, validated frame."""

    type: str
    id: str
    ts: float
    payload: Any


_envelope_decoder = msgspec.json.Decoder(Envelope)
_encoder = msgspec.json.Encoder()


def decode(raw: str | bytes, registry: dict[str, type[Payload]]) -> Frame:
    """Parse and validate one frame against ``registry`` (AGENT_MESSAGES or CONTROL_PLANE_MESSAGES)."""
    if len(raw) > MAX_FRAME_BYTES:
        raise ProtocolError("frame_too_large", f"frames are limited to {MAX_FRAME_BYTES} bytes")
    try:
        envelope = _envelope_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise ProtocolError("bad_frame", f"not a valid frame envelope: {exc}") from None
    schema = registry.get(envelope.type)
    if schema is None:
        raise ProtocolError("unknown_type", f"unknown message type {envelope.type!r}")
    try:
        payload = msgspec.convert(envelope.payload, schema)
    except msgspec.ValidationError as exc:
        raise ProtocolError("invalid_payload", f"{envelope.type}: {exc}") from None
    return Frame(type=envelope.type, id=envelope.id, ts=envelope.ts, payload=payload)


def encode(payload: Payload, *, frame_id: str | None = None) -> str:
    """Serialise a payload struct into a frame (JSON text)."""
    envelope = {
        "type": _TYPE_OF[type(payload)],
        "id": frame_id or uuid.uuid4().hex,
        "ts": time.time(),
        "payload": msgspec.to_builtins(payload),
    }
    return _encoder.encode(envelope).decode("utf-8")


def to_dict(payload: Payload) -> dict[str, Any]:
    return msgspec.to_builtins(payload)


def image_key(reference: str) -> str:
    """The form in which image references are compared: Docker's short name with a tag.

    ``nginx``, ``docker.io/library/nginx`` and ``nginx:latest`` are all ``nginx:latest``;
    ``ghcr.io/org/app`` is ``ghcr.io/org/app:latest``; a digest reference
    (``repo@sha256:...``) keeps its digest and gets no tag.
    """
    ref = reference.strip()
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
            break
    if ref.startswith("library/") and ref.count("/") == 1:
        ref = ref[len("library/") :]
    if "@" in ref:
        return ref
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else f"{ref}:latest"

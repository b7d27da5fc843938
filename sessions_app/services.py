"""Session lifecycle: launch, stop, hibernate, wake, activity.

Views, consumers and tasks call these functions; they own the rules. Every change is
audited, every agent command is a durable row created in the same transaction as the state
change (``agents_app.services.enqueue_command``), and the frame goes out on commit. What
agents report back arrives through ``sessions_app/agent_reports.py``.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agent_runtime.protocol import SPEC_STREAM_SECRET, SPEC_STREAM_VIEW_SECRET
from agents_app import services as agents
from agents_app.models import CommandAction
from sessions_app import history, placement, quotas, sharing
from sessions_app.models import GroupQuota, Session, SessionState, Template
from sessions_app.notify import session_changed, sessions_changed
from sessions_app.state import IllegalTransition, transition, transition_many
from streamspace import events
from streamspace.api.errors import Forbidden, ServiceError
from streamspace.api.inserts import insert_together
from streamspace.audit.services import event as audit_event
from streamspace.audit.services import record, record_many

S = SessionState


class QuotaExceeded(Forbidden):
    code = "quota_exceeded"


def policy_idle_timeout(user: Any, template: Template, *, groups: list[GroupQuota] | None = None) -> int:
    """The longest idle time allowed: the user's groups (strictest), else template, else site.

    ``groups``: the user's group quota rows, when the caller has read them already.
    """
    if groups is None:
        groups = quotas.group_quotas(user)
    group_values = [q.idle_timeout_s for q in groups if q.idle_timeout_s is not None]
    if group_values:
        return min(group_values)
    if template.idle_timeout_s is not None:
        return template.idle_timeout_s
    return settings.STREAMSPACE_DEFAULT_IDLE_TIMEOUT_S


def start_spec(session: Session) -> dict[str, Any]:
    """What the agent needs to start (or re-create) the session's workload.

    The stream secrets travel only when the session has them (its template took them at
    launch), so a wake re-creates the workload with the secrets the proxy presents.
    """
    template = session.template
    return {
        "home_mount_path": template.home_path,
        "shm_size_mb": template.shm_size_mb or 0,
        "read_only_root": template.read_only_root,
        SPEC_STREAM_SECRET: session.stream_secret,
        SPEC_STREAM_VIEW_SECRET: session.stream_view_secret,
        "image": template.image,
        "command": list(template.command or []),
        "env": dict(template.env or {}),
        "cpu_millicores": session.cpu_millicores,
        "memory_mb": session.memory_mb,
        "persistent_home": session.persistent_home,
        "streaming_port": template.streaming_port,
        "volume_mounts": list(template.volume_mounts or []),
        "user": session.user.get_username(),
        "template": template.slug,
        "gpu": template.gpu,
        "node_selector": dict(template.node_selector or {}),
        "tolerations": list(template.tolerations or []),
    }


def new_stream_secrets(template: Template) -> dict[str, str]:
    """Fresh ``stream_secret`` and ``stream_view_secret`` for a session of ``template`` (empty
    when the template's workload takes none)."""
    if not template.stream_auth:
        return {"stream_secret": "", "stream_view_secret": ""}
    return {"stream_secret": secrets.token_urlsafe(32), "stream_view_secret": secrets.token_urlsafe(32)}


def _quota_refusal(
    user: Any, limit: str, quota: quotas.EffectiveQuota, current: quotas.Usage, request: Any, template: Template | None
) -> QuotaExceeded:
    details = {
        "limit": limit,
        "quota": quota.as_dict(),
        "usage": current.as_dict(),
        "template": template.slug if template else None,
    }
    record("quota.exceeded", actor=user, target=user, request=request, details=details)
    events.emit("quota.exceeded", actor=user, data=details)
    return QuotaExceeded(
        f"Launching this would exceed your {limit.replace('_', ' ')} quota ({getattr(quota, limit)}).",
        extra={"limit": limit, "quota": quota.as_dict(), "usage": current.as_dict()},
    )


def launch_session(
    user: Any,
    template: Template,
    *,
    cpu_millicores: int | None = None,
    memory_mb: int | None = None,
    persistent_home: bool = True,
    idle_timeout_s: int | None = None,
    name: str | None = None,
    request: Any = None,
) -> Session:
    """Create a ``pending`` session for ``user`` and queue its ``start_session`` command.

    Raises ``QuotaExceeded`` (403) if the session would exceed any of the user's limits,
    the refusal of :func:`sessions_app.placement.select_agent` (503 ``no_agent`` or
    ``no_capacity``, 409 ``image_missing`` or ``feature_missing``) if no agent can serve the
    template now, ``ServiceError`` (400, ``template_disabled``) for a disabled template.

    One transaction, in this order: the user's quota row is locked (every launch and wake of
    the user serialises on it), then the candidate agents' rows
    (:func:`~sessions_app.placement.lock_agents`), and the agent is chosen under those locks,
    so concurrent launches count each other's sessions and never take a user past a limit or
    an agent past its capacity. A launch nobody can serve is refused before the quota is
    judged (its refusal wins over ``quota_exceeded``) and leaves nothing behind: the refusal
    rolls the transaction back.
    """
    if not template.enabled:
        raise ServiceError(f"The template {template.slug} is disabled.", code="template_disabled")
    cpu = cpu_millicores or template.default_cpu_millicores
    memory = memory_mb or template.default_memory_mb
    groups = quotas.group_quotas(user)
    policy = policy_idle_timeout(user, template, groups=groups)
    idle = policy if idle_timeout_s is None else min(idle_timeout_s, policy)
    # Everything that does not depend on the locks is built before them: while the quota
    # row is held, the launch runs its SQL and little else.
    session = Session(
        name=name or template.display_name,
        user=user,
        template=template,
        state=S.PENDING,
        cpu_millicores=cpu,
        memory_mb=memory,
        persistent_home=persistent_home,
        idle_timeout_s=idle,
        **new_stream_secrets(template),
    )
    spec = start_spec(session)
    details = {"template": template.slug, "agent": "", "cpu_millicores": cpu, "memory_mb": memory}
    with transaction.atomic():
        override = quotas.lock_user_quota(user)
        placement.lock_agents(template)
        agent = placement.select_agent(template, cpu=cpu, memory=memory)
        quota, current = quotas.effective_quota(user, override=override, groups=groups), quotas.usage(user)
        limit = quotas.exceeded(quota, current, sessions=1, cpu=cpu, memory=memory)
        if limit is None:
            now = timezone.now()
            session.agent, session.platform = agent, agent.platform
            session.last_activity = session.state_changed_at = now
            details["agent"] = agent.agent_id
            route = placement.direct_route(agent)
            commands = agents.new_commands([(session, CommandAction.START, spec)], route=route)
            # The session, its first period, its audit event and its command: one round trip.
            insert_together(
                session,
                history.first_period(session, S.PENDING, now),
                audit_event("session.create", actor=user, target=session, request=request, details=details),
                *commands,
            )
            agents.send_on_commit(commands, route=route)
            session_id, user_id = session.pk, user.pk
            transaction.on_commit(lambda: session_changed(session_id, user_id, None, S.PENDING, actor=user))
    if limit is not None:
        raise _quota_refusal(user, limit, quota, current, request, template)
    return session


def stop_session(session: Session, *, actor: Any = None, request: Any = None) -> Session:
    """Stop and remove the session's workload (its home volume is kept). Idempotent."""
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session.pk)
        if session.state in (S.STOPPING, S.STOPPED):
            return session
        transition(session, S.STOPPING, message="Stopping", actor=actor)
        record("session.stop", actor=actor, target=session, request=request)
        sharing.end_all(session, actor=actor)  # a share ends with its session
        agents.enqueue_command(session, CommandAction.STOP, {"delete_home": False})
    return session


def hibernate_session(session: Session, *, actor: Any = None, request: Any = None, reason: str = "user") -> Session:
    """Scale a running session to zero, keeping its home. Idempotent while hibernating."""
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session.pk)
        if session.state in (S.HIBERNATING, S.HIBERNATED):
            return session
        hibernate_claimed([session], actor=actor, request=request, reason=reason)
    return session


def hibernate_claimed(sessions: list[Session], *, actor: Any = None, request: Any = None, reason: str = "user") -> None:
    """Hibernate sessions whose rows the caller has just locked (``SELECT ... FOR UPDATE``).

    Must run in the transaction holding the locks; the rows are not read again. Each session
    gets its own state change, audit event, ``hibernate_session`` command and broadcast, but
    batched: one compare-and-set UPDATE, one INSERT of audit events, one of commands and, on
    commit, one query for the broadcasts and one send per agent's leader. Raises
    ``IllegalTransition`` if one of them cannot hibernate (the caller's transaction then
    rolls back the others).
    """
    previous = transition_many(sessions, S.HIBERNATING, message="Hibernating")
    changes = [(session.pk, session.user_id, previous, S.HIBERNATING) for session in sessions]
    record_many(
        [
            audit_event("session.hibernate", actor=actor, target=s, request=request, details={"reason": reason})
            for s in sessions
        ]
    )
    agents.enqueue_commands([(session, CommandAction.HIBERNATE, {}) for session in sessions])
    transaction.on_commit(lambda: sessions_changed(changes, actor=actor))


def wake_session(session: Session, *, actor: Any = None, request: Any = None) -> Session:
    """Bring a hibernated session back; CPU and memory quota are checked again."""
    refusal_args = None
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session.pk)
        if session.state in (S.WAKING, S.RUNNING):
            return session
        if session.state != S.HIBERNATED:
            raise IllegalTransition(
                f"A session cannot go from {session.state} to waking.",
                extra={"state": session.state, "target": S.WAKING},
            )
        override = quotas.lock_user_quota(session.user)
        quota = quotas.effective_quota(session.user, override=override)
        current = quotas.usage(session.user, exclude_session_id=session.pk)
        limit = quotas.exceeded(quota, current, sessions=0, cpu=session.cpu_millicores, memory=session.memory_mb)
        if limit is None:
            transition(session, S.WAKING, message="Waking up", actor=actor, last_activity=timezone.now())
            record("session.wake", actor=actor, target=session, request=request)
            agents.enqueue_command(session, CommandAction.WAKE, start_spec(session))
        else:
            refusal_args = (limit, quota, current)
    if refusal_args:
        raise _quota_refusal(session.user, *refusal_args, request, session.template)
    return session


def record_activity(session: Session, *, now: Any = None) -> bool:
    """Mark the session as used; writes at most once per ``STREAMSPACE_ACTIVITY_WRITE_INTERVAL_S``.

    Returns True if a write happened. The conditional UPDATE makes the throttle hold across
    replicas without a cache.
    """
    now = now or timezone.now()
    threshold = now - timedelta(seconds=settings.STREAMSPACE_ACTIVITY_WRITE_INTERVAL_S)
    written = Session.objects.filter(pk=session.pk, last_activity__lt=threshold).update(last_activity=now)
    if written:
        session.last_activity = now
    return bool(written)


# --- driven by the agent (session_status frames, results, inventory) ----------------------

# What an agent-reported state means for the state machine, by current state.
_AGENT_REPORTS: dict[str, dict[str, str]] = {
    S.STARTING: {S.PENDING: S.STARTING},
    S.RUNNING: {S.PENDING: S.RUNNING, S.STARTING: S.RUNNING, S.WAKING: S.RUNNING},
    S.HIBERNATED: {S.HIBERNATING: S.HIBERNATED},
    S.STOPPED: {S.STOPPING: S.STOPPED},
}
# A workload that vanished while the session should be up is a failure, not a stop.
_UNEXPECTED_STOP = (S.PENDING, S.STARTING, S.RUNNING, S.WAKING, S.HIBERNATING, S.HIBERNATED)


def apply_agent_status(
    session: Session | Any,
    state: str,
    *,
    streaming_ready: bool = False,
    streaming_port: int | None = None,
    endpoint: str | None = None,
    message: str | None = None,
    agent: Any = None,
    locked: bool = False,
) -> bool:
    """Apply an agent's ``session_status`` report. Returns True if the session changed.

    ``session``: the session or its id (read once, locked). With ``agent``, only a session
    of that agent is found; ``Session.DoesNotExist`` otherwise. With ``locked``, ``session``
    is a full row the caller read with ``select_for_update`` in its open transaction, and is
    used as it is (not read again).

    Reports arrive out of order and more than once (re-sent commands, reconnects), so one
    that does not fit the current state is ignored rather than refused; a ``running``
    report for a running session only refreshes the streaming fields.
    """
    fields: dict[str, Any] = {}
    if state == S.RUNNING:
        fields = {"streaming_ready": streaming_ready, "streaming_port": streaming_port}
        if endpoint is not None:
            fields["endpoint"] = endpoint[:300]
    # No savepoint: nothing here catches a database error and goes on, so an error fails
    # the caller's whole transaction either way.
    with transaction.atomic(savepoint=False):
        if not locked:
            rows = Session.objects.select_for_update()
            if agent is not None:
                rows = rows.filter(agent=agent)
            session = rows.get(pk=getattr(session, "pk", session))
        current = session.state
        target = _AGENT_REPORTS.get(state, {}).get(current)
        if state == S.FAILED and current not in (S.STOPPED, S.FAILED):
            target = S.FAILED
        elif state == S.STOPPED and current in _UNEXPECTED_STOP:
            target, message = S.FAILED, message or "The session's workload stopped on the agent."
        if target is not None:
            transition(session, target, message=message if message is not None else "", **fields)
            return True
        if current == state == S.RUNNING:
            changed = {k: v for k, v in fields.items() if getattr(session, k) != v}
            if message is not None and message != session.status_message:
                changed["status_message"] = message[:500]
            if changed:
                Session.objects.filter(pk=session.pk).update(**changed, updated_at=timezone.now())
                session_id, user_id = session.pk, session.user_id
                transaction.on_commit(lambda: session_changed(session_id, user_id, S.RUNNING, S.RUNNING))
                return True
            return False
        if message and state == current and message != session.status_message:
            Session.objects.filter(pk=session.pk).update(status_message=message[:500], updated_at=timezone.now())
            session_id, user_id = session.pk, session.user_id
            transaction.on_commit(lambda: session_changed(session_id, user_id, current, current))
            return True
    return False


def fail_session(session: Session | Any, message: str, *, only_in: Collection[str] = ()) -> bool:
    """Mark the session (or the session with this id) failed: a command failed, or the agent
    lost it. With ``only_in``, only while its state (read under the row lock) is one of those.
    Idempotent."""
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=getattr(session, "pk", session))
        if session.state in (S.FAILED, S.STOPPED) or (only_in and session.state not in only_in):
            return False
        transition(session, S.FAILED, message=message)
    return True

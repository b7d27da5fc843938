"""Rows for tests, created directly (no agent round trip needed)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from sessions_app.models import Session, Share, ShareRole
from streamspace.accounts.models import Role, User


def make_user(username: str, role: str = Role.USER, **extra: Any) -> User:
    """A user whose password is ``pw-<username>``."""
    return User.objects.create_user(
        username, email=f"{username}@example.com", password="pw-" + username, role=role, **extra
    )


def make_session(
    user: Any, template: Any, agent: Any = None, *, state: str = "running", idle_for_s: float = 0, **extra: Any
) -> Session:
    """One session row in ``state``, last active ``idle_for_s`` seconds ago."""
    now = timezone.now()
    values = {
        "name": state,
        "user": user,
        "template": template,
        "agent": agent,
        "platform": agent.platform if agent is not None else "",
        "state": state,
        "cpu_millicores": 100,
        "memory_mb": 100,
        "idle_timeout_s": 60,
        "last_activity": now - timedelta(seconds=idle_for_s),
        "state_changed_at": now - timedelta(seconds=idle_for_s),
    }
    values.update(extra)
    return Session.objects.create(**values)


def share(session: Session, *users: Any, role: str = ShareRole.COLLABORATOR, may_manage: bool = False) -> list[Share]:
    """Share rows of ``session`` to each of ``users`` (directly, not through the API's checks)."""
    return [Share.objects.create(session=session, user=user, role=role, may_manage=may_manage) for user in users]


def bulk_sessions(user: Any, template: Any, agent: Any, count: int, *, idle_for_s: float = 0, **extra: Any) -> None:
    """``count`` session rows in one bulk insert (defaults: running, 1 mCPU, 1 MB)."""
    now = timezone.now()
    Session.objects.bulk_create(
        [
            Session(
                name=f"bulk-{i}",
                user=user,
                template=template,
                agent=agent,
                platform=agent.platform,
                state=extra.get("state", "running"),
                cpu_millicores=1,
                memory_mb=1,
                idle_timeout_s=extra.get("idle_timeout_s", 600),
                last_activity=now - timedelta(seconds=idle_for_s),
                state_changed_at=now,
            )
            for i in range(count)
        ],
        batch_size=2000,
    )


def make_leader(
    agent: Any, instance_id: str = "leader-1", *, channel_name: str | None = None, connected_at: Any = None
) -> Any:
    """A connected leader instance of ``agent``; by default on a fresh channel of the layer,
    read by the test instead of a consumer."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from agents_app.models import AgentInstance

    if channel_name is None:
        channel_name = async_to_sync(get_channel_layer().new_channel)()
    return AgentInstance.objects.create(
        agent=agent,
        instance_id=instance_id,
        pod="test",
        channel_name=channel_name,
        is_leader=True,
        connected=True,
        connected_at=connected_at or timezone.now(),
    )

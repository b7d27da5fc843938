"""Who may do what to a session: one rule for the API, the portal and the session proxy.

* **View** (read it, open its viewer and see the picture): the owner, operators, admins and
  every recipient of a share (to the user or one of their groups), whatever its role.
* **Interact** (send input through the viewer, upload and delete files in its home): the owner, operators, admins
  and recipients of a *collaborator* share. A *viewer* share sees the picture only
  (docs/architecture.md §22: how the proxy keeps a viewer's input away from the session).
* **Files**: reading the session's home follows *view*; uploading and deleting,
  :func:`may_write_files` (*interact*).
* **Manage** (stop, hibernate, wake, read the logs): the owner, operators and admins, and a
  recipient whose share says ``may_manage``. Without it a recipient never changes the
  session's lifecycle: waking runs the session again on its owner's quota, so it is the
  owner's (or an operator's) decision, whether it is asked through the API, the portal or by
  opening a hibernated session through the proxy.
* **Share** (grant and revoke shares and links): the owner, operators and admins only; a
  recipient never passes the session on.

A share link is not a user: its holder reaches the session's origin only (the proxy reads
the link, ``sessions_app.sharing``), never the API or the portal.

Each rule has an object form here (for a session in hand) and a queryset form on the manager,
``Session.objects.visible_to(user)`` and ``.managed_by(user)`` (so that a session the caller
may not see answers 404 and ids cannot be probed); they are tested to agree.
"""

from __future__ import annotations

from typing import Any

from sessions_app.models import Session, Share, ShareRole
from streamspace.api.permissions import is_operator

OWNER = "owner"  # the owner, an operator or an admin: every right
ROLE_RANK = {ShareRole.VIEWER.value: 1, ShareRole.COLLABORATOR.value: 2, OWNER: 3}


def _authenticated(user: Any) -> bool:
    return bool(user and user.is_authenticated)


def share_grant(user: Any, session_id: Any) -> tuple[str, bool] | None:
    """``(role, may_manage)`` of the best share of ``session_id`` to ``user`` (one query), or None.

    A user with a viewer share and, through a group, a collaborator share is a collaborator;
    ``may_manage`` holds if any of their shares says so.
    """
    if not _authenticated(user):
        return None
    rows = list(Share.objects.for_user(user).filter(session_id=session_id).values_list("role", "may_manage"))
    if not rows:
        return None
    role = max((role for role, _ in rows), key=ROLE_RANK.__getitem__)
    return role, any(manage for _, manage in rows)


def role_of(user: Any, session: Session) -> str | None:
    """``"owner"`` (owner, operator, admin), ``"collaborator"``, ``"viewer"`` or None (no right)."""
    if not _authenticated(user):
        return None
    if is_operator(user) or session.user_id == user.pk:
        return OWNER
    grant = share_grant(user, session.pk)
    return grant[0] if grant else None


def may_view(user: Any, session: Session) -> bool:
    """Owner, share recipient (any role), operator or admin (one query for a share recipient)."""
    return role_of(user, session) is not None


def may_interact(user: Any, session: Session) -> bool:
    """Owner, collaborator, operator or admin: who may send input and upload files."""
    return role_of(user, session) in (OWNER, ShareRole.COLLABORATOR)


def may_manage(user: Any, session: Session) -> bool:
    """Owner, operator, admin, or a recipient whose share says ``may_manage``: who may stop,
    hibernate or wake ``session``."""
    if not _authenticated(user):
        return False
    if is_operator(user) or session.user_id == user.pk:
        return True
    grant = share_grant(user, session.pk)
    return bool(grant and grant[1])


def may_share(user: Any, session: Session) -> bool:
    """Owner, operator or admin: who may list, grant and revoke the shares of ``session``."""
    return _authenticated(user) and (is_operator(user) or session.user_id == user.pk)


def may_write_files(user: Any, session: Session) -> bool:
    """Who may upload into and delete from ``session``'s home (docs/architecture.md §23).

    Those who may interact with it (owner, operators, admins, collaborators): a viewer share
    watches and downloads but never changes the session's files. Reading follows
    :func:`may_view`.
    """
    return may_interact(user, session)

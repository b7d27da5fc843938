"""Who may do what to a session: one rule for the API, the portal and the session proxy.

* **View** (read it, open its viewer): the owner, users it is shared with, operators and
  admins.
* **Files**: reading the session's home follows *view*; uploading and deleting,
  :func:`may_write_files` (*manage*).
* **Manage** (stop, hibernate, wake): the owner, operators and admins. A share recipient
  views but never manages: waking runs the session again on its owner's quota, so it is the
  owner's (or an operator's) decision, whether it is asked through the API, the portal or by
  opening a hibernated session through the proxy.

Each rule has an object form here (for a session in hand) and a queryset form on the manager,
``Session.objects.visible_to(user)`` and ``.managed_by(user)`` (so that a session the caller
may not see answers 404 and ids cannot be probed); they are tested to agree.
"""

from __future__ import annotations

from typing import Any

from sessions_app.models import Session
from streamspace.api.permissions import is_operator


def may_view(user: Any, session: Session) -> bool:
    """Owner, share recipient, operator or admin (one query for a share recipient)."""
    if not (user and user.is_authenticated):
        return False
    if is_operator(user) or session.user_id == user.pk:
        return True
    return Session.shared_with.through.objects.filter(session_id=session.pk, user_id=user.pk).exists()


def may_manage(user: Any, session: Session) -> bool:
    """Owner, operator or admin: who may stop, hibernate or wake ``session``."""
    return bool(user and user.is_authenticated) and (is_operator(user) or session.user_id == user.pk)


def may_write_files(user: Any, session: Session) -> bool:
    """Who may upload into and delete from ``session``'s home (docs/architecture.md §17).

    Those who manage the session. Reading its files follows :func:`may_view`; a recipient
    who may only watch the session cannot change its files.
    """
    return may_manage(user, session)

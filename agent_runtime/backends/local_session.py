"""Who a local session runs as, and the environment it starts with.

A session is the user's code: it must not inherit what the agent holds. So

* **its environment is built, not inherited**: a few variables that make a process work
  (:data:`PASSED_VARIABLES`: ``PATH``, the locale, ``TZ``, ``TERM``, ``DISPLAY``...) are
  copied from the agent's, unless their name looks secret (:func:`is_secret_name`); then
  the template's ``env``; then what the backend sets (``HOME``, ``USER``, ``LOGNAME``,
  ``PORT``, ``STREAMSPACE_SESSION_ID``). The agent's token (``AGENT_TOKEN``), its
  configuration (``STREAMSPACE_*``, ``CONTROL_PLANE_URL``...) and anything else in its
  environment never reach a session.
* **where the agent runs as root, the session does not**: it runs as the *session user*
  (``--session-user`` / ``STREAMSPACE_LOCAL_SESSION_USER``; default ``streamspace-session``
  when that account exists, else ``nobody``), with that user's primary group and no
  supplementary groups, and its home is given to that user. Naming ``root`` (or the agent's
  own account) keeps sessions as root: an explicit choice, logged as a warning. An agent
  that does not run as root cannot switch users: its sessions run as its own account, and
  a session user naming another account is a configuration error.

A session running as the agent's own account can still read what that account can (the
agent's data directory, and ``/proc/<agent pid>/environ``): the local backend isolates
sessions from the agent only with a session user. docs/local-agent.md says so.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent_runtime.backends.base import BackendError

log = logging.getLogger(__name__)

DEFAULT_SESSION_USERS = ("streamspace-session", "nobody")

# Copied from the agent's environment when set (and not secret-looking).
PASSED_VARIABLES = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "LC_ALL",
        "LC_ADDRESS",
        "LC_COLLATE",
        "LC_CTYPE",
        "LC_IDENTIFICATION",
        "LC_MEASUREMENT",
        "LC_MESSAGES",
        "LC_MONETARY",
        "LC_NAME",
        "LC_NUMERIC",
        "LC_PAPER",
        "LC_TELEPHONE",
        "LC_TIME",
        "TZ",
        "TERM",
        "DISPLAY",
        "WAYLAND_DISPLAY",
    }
)
_SECRET_NAME = re.compile(
    r"^(STREAMSPACE_.*|.*(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY).*|.*_KEY)$", re.IGNORECASE
)


def is_secret_name(name: str) -> bool:
    """Whether a variable of the agent's environment may hold one of its secrets."""
    return bool(_SECRET_NAME.match(name))


@dataclass(frozen=True)
class SessionUser:
    """The account sessions run as. ``switch``: the agent changes to it when starting one."""

    name: str
    uid: int
    gid: int
    switch: bool


def resolve_session_user(configured: str | None, *, euid: int | None = None) -> SessionUser:
    """The account for sessions, from the ``session_user`` option (``configured``).

    Raises :class:`BackendError` for an account that does not exist, or for another account
    when the agent is not root (it could not switch to it).
    """
    euid = os.geteuid() if euid is None else euid
    current = _account(euid)
    configured = (configured or "").strip()
    if euid != 0:
        if configured and configured not in (current.pw_name, str(euid)):
            raise BackendError(
                f"the session user {configured!r} needs the agent to run as root; "
                f"this agent runs as {current.pw_name!r}, and so do its sessions"
            )
        return SessionUser(current.pw_name, euid, current.pw_gid, switch=False)
    candidates = (configured,) if configured else DEFAULT_SESSION_USERS
    for name in candidates:
        try:
            account = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except (KeyError, ValueError):
            continue
        if account.pw_uid == 0:
            log.warning("local sessions run as root: the session user %r is root", name)
            return SessionUser(account.pw_name, 0, account.pw_gid, switch=False)
        return SessionUser(account.pw_name, account.pw_uid, account.pw_gid, switch=True)
    wanted = configured or " or ".join(DEFAULT_SESSION_USERS)
    raise BackendError(
        f"the session user {wanted} does not exist on this host; create it or set --session-user "
        "(STREAMSPACE_LOCAL_SESSION_USER)"
    )


def _account(uid: int) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(uid)
    except KeyError:  # a uid without a passwd entry (some containers)
        return pwd.struct_passwd((str(uid), "x", uid, os.getgid(), "", "/", ""))


def session_environment(
    agent_env: Mapping[str, str],
    template_env: Mapping[str, str],
    *,
    home: Path,
    port: int,
    session_id: str,
    user: SessionUser,
    stream: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The whole environment of a session process (pure). ``stream``: the session's stream
    secrets as variables (:meth:`SessionSpec.stream_environment`), set last so that neither
    the agent's nor the template's environment can replace them."""
    env = {k: v for k, v in agent_env.items() if k in PASSED_VARIABLES and not is_secret_name(k)}
    env.setdefault("PATH", os.defpath)
    env.update(template_env)
    env.update(
        {
            "HOME": str(home),
            "USER": user.name,
            "LOGNAME": user.name,
            "PORT": str(port),
            "STREAMSPACE_SESSION_ID": session_id,
        }
    )
    env.update(stream or {})
    return env


def unreachable(path: Path, user: SessionUser, *, execute: bool = False) -> Path | None:
    """The first directory on the way to ``path`` (symbolic links followed) that the session
    user cannot search, or with ``execute`` the file itself when they cannot run it; None
    when ``path`` is within their reach (always for a user the agent does not switch to)."""
    if not user.switch:
        return None
    given = Path(os.path.abspath(path))
    real = Path(os.path.realpath(path))
    for candidate in dict.fromkeys((given, real)):
        for directory in reversed(candidate.parents):
            if not _allowed(directory, user, stat.S_IXUSR):
                return directory
        if execute and not _allowed(candidate, user, stat.S_IXUSR):
            return candidate
    return None


def _allowed(path: Path, user: SessionUser, owner_bit: int) -> bool:
    try:
        info = path.stat()
    except OSError:
        return True  # does not exist (yet): created by the agent below a reachable parent
    if info.st_uid == user.uid:
        return bool(info.st_mode & owner_bit)
    if info.st_gid == user.gid:
        return bool(info.st_mode & (owner_bit >> 3))
    return bool(info.st_mode & (owner_bit >> 6))


def give_home(home: Path, user: SessionUser) -> None:
    """Make ``home`` (and, once, everything in it) the session user's, mode 0700."""
    if not user.switch:
        return
    info = home.stat()
    if info.st_uid != user.uid:
        for directory, dirs, files in os.walk(home):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(directory, name), user.uid, user.gid)
        os.chown(home, user.uid, user.gid)
    os.chmod(home, 0o700)

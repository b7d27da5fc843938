"""A local session never inherits the agent's secrets, and a root agent's sessions are not root.

The attack: a session read ``AGENT_TOKEN`` from its own environment (or the agent's
``/proc/<pid>/environ``) and registered as the agent. Each session here writes what it can
see into its home and the test reads it back.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from agent_runtime.backends import local_session
from agent_runtime.backends.base import BackendError, SessionSpec
from agent_runtime.backends.local import LocalBackend

SECRETS = {
    "AGENT_TOKEN": "ssa_agent-token-must-not-leak",
    "STREAMSPACE_LOCAL_SOMETHING": "agent-config",
    "GITHUB_TOKEN": "ghp_leak",
    "DB_PASSWORD": "pw-leak",
    "DJANGO_SECRET": "secret-leak",
    "AWS_SECRET_ACCESS_KEY": "aws-leak",
    "CONTROL_PLANE_URL": "http://cp.internal",
    "SOME_RANDOM_SETTING": "not for sessions",
}
# Writes the session's own environment, its uid and whether it could read the agent's.
REPORT = [
    "/bin/sh",
    "-c",
    'tr "\\0" "\\n" < /proc/self/environ > "$HOME/environ"; id -u > "$HOME/uid"; '
    'if cat "/proc/$AGENT_PID/environ" > /dev/null 2>&1; then echo yes; else echo no; fi > "$HOME/agent-environ"; '
    'touch "$HOME/done"; exec sleep 60',
]


@pytest.fixture
def data_dir():
    """A data directory an unprivileged session user can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="ss-local-session-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def run_report(backend: LocalBackend, session_id: str, **spec) -> dict[str, str]:
    body = {"command": REPORT, "user": "alice", "template": "t", "env": {"AGENT_PID": str(os.getpid())}, **spec}
    await backend.start(session_id, SessionSpec.parse(body))
    try:
        home = Path(backend._load()[session_id]["home"])
        deadline = time.monotonic() + 10
        while not (home / "done").exists():
            assert time.monotonic() < deadline, (backend.logs_dir / f"{session_id}.log").read_text()
            await asyncio.sleep(0.02)
        environ = dict(line.split("=", 1) for line in (home / "environ").read_text().splitlines() if "=" in line)
        return {
            "uid": (home / "uid").read_text().strip(),
            "agent_environ": (home / "agent-environ").read_text().strip(),
            **{f"env:{k}": v for k, v in environ.items()},
        }
    finally:
        await backend.stop(session_id, SessionSpec())


def assert_no_agent_secret(report: dict[str, str]) -> None:
    leaked = {k: v for k, v in report.items() if any(secret in v for secret in SECRETS.values())}
    assert not leaked, leaked
    assert not any(key.removeprefix("env:") in SECRETS for key in report)


async def test_a_session_sees_none_of_the_agents_environment(data_dir, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LANG", "C.UTF-8")
    same_user = pwd.getpwuid(os.geteuid()).pw_name
    backend = LocalBackend(agent_id="local", data_dir=data_dir, options={"session_user": same_user})
    report = await run_report(backend, "env-1", env={"AGENT_PID": str(os.getpid()), "TEMPLATE_VAR": "from-template"})
    assert_no_agent_secret(report)
    assert report["env:LANG"] == "C.UTF-8" and report["env:PATH"]  # what a process needs
    assert report["env:TEMPLATE_VAR"] == "from-template"  # the template's env
    assert report["env:STREAMSPACE_SESSION_ID"] == "env-1" and report["env:HOME"].startswith(str(data_dir))
    assert report["env:USER"] == same_user


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs an agent running as root")
async def test_a_root_agents_session_runs_as_the_session_user(data_dir, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    backend = LocalBackend(agent_id="local", data_dir=data_dir, options={"session_user": "nobody"})
    report = await run_report(backend, "user-1")
    nobody = pwd.getpwnam("nobody")
    assert report["uid"] == str(nobody.pw_uid)
    assert report["agent_environ"] == "no"  # /proc/<agent pid>/environ is not readable to it
    assert report["env:USER"] == "nobody"
    assert_no_agent_secret(report)
    home = Path(report["env:HOME"])
    assert home.stat().st_uid == nobody.pw_uid and home.stat().st_mode & 0o777 == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="needs an agent running as root")
def test_a_root_agent_defaults_to_an_unprivileged_user(monkeypatch):
    user = local_session.resolve_session_user("")
    assert user.switch and user.uid != 0
    assert user.name == ("streamspace-session" if _exists("streamspace-session") else "nobody")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs an agent running as root")
async def test_a_session_user_who_cannot_reach_the_program_is_a_clear_error(tmp_path):
    tmp_path.chmod(0o700)  # pytest's own: not searchable by others
    with pytest.raises(BackendError, match="session user nobody cannot reach its home"):
        backend = LocalBackend(agent_id="local", data_dir=tmp_path, options={"session_user": "nobody"})
        await backend.start("x", SessionSpec.parse({"command": ["/bin/true"], "user": "alice", "template": "t"}))


def test_unknown_session_user_and_non_root_switch_are_refused():
    with pytest.raises(BackendError, match="does not exist"):
        local_session.resolve_session_user("no-such-user-streamspace", euid=0)
    with pytest.raises(BackendError, match="needs the agent to run as root"):
        local_session.resolve_session_user("root", euid=65534)
    assert local_session.resolve_session_user("", euid=65534).switch is False


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("AGENT_TOKEN", True),
        ("STREAMSPACE_DATA_DIR", True),
        ("streamspace_x", True),
        ("GITLAB_TOKEN", True),
        ("MY_SECRET", True),
        ("PGPASSWORD", True),
        ("OPENAI_API_KEY", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("TOKENS_DIR", True),
        ("PATH", False),
        ("LANG", False),
        ("DISPLAY", False),
    ],
)
def test_secret_names(name, secret):
    assert local_session.is_secret_name(name) is secret


def test_environment_is_built_from_an_allow_list():
    user = local_session.SessionUser("nobody", 65534, 65534, switch=True)
    env = local_session.session_environment(
        {"PATH": "/usr/bin", "AGENT_TOKEN": "x", "HOME": "/root", "EDITOR": "vi", "DISPLAY": ":0"},
        {"EDITOR": "nano"},
        home=Path("/h"),
        port=9,
        session_id="s",
        user=user,
    )
    assert env == {
        "PATH": "/usr/bin",
        "DISPLAY": ":0",
        "EDITOR": "nano",
        "HOME": "/h",
        "USER": "nobody",
        "LOGNAME": "nobody",
        "PORT": "9",
        "STREAMSPACE_SESSION_ID": "s",
    }


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True

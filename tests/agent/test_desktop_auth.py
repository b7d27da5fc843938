"""The local desktop's Selkies login comes from the session's stream secrets, and only Selkies
sees them (agent_runtime/desktop.py; the contract in docs/architecture.md §19)."""

from __future__ import annotations

from pathlib import Path

from agent_runtime import desktop


def test_without_a_stream_secret_selkies_serves_without_a_login():
    flags, env = desktop.selkies_auth({"PATH": "/bin", "PASSWORD": "inherited", "DISPLAY": ":5"})
    assert flags == ["--enable-basic-auth=false"]
    assert env == {"PATH": "/bin", "DISPLAY": ":5"}  # an inherited password is never selkies's


def test_the_stream_secrets_are_selkies_basic_auth_passwords_through_its_environment():
    environ = {
        "PATH": "/bin",
        "STREAMSPACE_STREAM_SECRET": "full-control",
        "STREAMSPACE_STREAM_VIEW_SECRET": "view-only",
        "VIEWONLY_PASSWORD": "inherited",
    }
    flags, env = desktop.selkies_auth(environ)
    assert flags == ["--enable-basic-auth=true", "--basic-auth-user=streamspace"]
    assert not any("full-control" in flag or "view-only" in flag for flag in flags)  # argv is public
    assert env["SELKIES_BASIC_AUTH_PASSWORD"] == "full-control"
    assert env["SELKIES_BASIC_AUTH_VIEWONLY_PASSWORD"] == "view-only"
    assert "VIEWONLY_PASSWORD" not in env


def test_a_stream_secret_without_a_view_secret_has_no_view_only_password():
    _flags, env = desktop.selkies_auth({"STREAMSPACE_STREAM_SECRET": "full-control"})
    assert "SELKIES_BASIC_AUTH_VIEWONLY_PASSWORD" not in env


def test_the_sessions_other_programs_never_see_the_secrets():
    environ = {
        "HOME": "/h",
        "STREAMSPACE_STREAM_SECRET": "a",
        "STREAMSPACE_STREAM_VIEW_SECRET": "b",
        "SELKIES_BASIC_AUTH_PASSWORD": "c",
    }
    assert desktop.without_stream_secrets(environ) == {"HOME": "/h"}


def test_the_display_file_is_per_session():
    home = Path("/h")
    assert desktop.display_file(home, {"STREAMSPACE_SESSION_ID": "s1"}, 8080) == home / ".run" / "display-s1"
    assert desktop.display_file(home, {}, 8080) == home / ".run" / "display-port-8080"

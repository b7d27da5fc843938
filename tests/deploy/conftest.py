"""Helpers for the deploy/ checks: paths, the env vars the code reads, external tools."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.support.ci import unavailable

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
VENV_BIN = REPO / ".venv" / "bin"

_CODE_DIRS = ["streamspace", "sessions_app", "agents_app", "plugins_app", "agent_runtime"]
_ENV_READS = [
    re.compile(r"\benv(?:str|bool|int|list)\(\s*\"([A-Z][A-Z0-9_]*)\""),  # streamspace/env.py helpers
    re.compile(r"os\.environ(?:\.get)?[\[(]\s*\"([A-Z][A-Z0-9_]*)\""),
    re.compile(r"os\.getenv\(\s*\"([A-Z][A-Z0-9_]*)\""),
    re.compile(r"\benv\.get\(\s*\"([A-Z][A-Z0-9_]*)\""),  # agent_runtime/config.py
    re.compile(r"\bflag\(\s*\"--[a-z-]+\",\s*\"([A-Z][A-Z0-9_]*)\""),  # agent_runtime/cli.py
]


def code_env_vars() -> set[str]:
    """Every environment variable name the control plane, the agent or the image's healthcheck reads."""
    files = [p for d in _CODE_DIRS for p in (REPO / d).rglob("*.py") if "migrations" not in p.parts]
    files.append(DEPLOY / "docker" / "healthcheck.py")
    names: set[str] = set()
    for path in files:
        text = path.read_text(encoding="utf-8")
        for pattern in _ENV_READS:
            names.update(pattern.findall(text))
    # A backend's options are STREAMSPACE_<PLATFORM>_<OPTION> (agent_runtime/cli.py).
    for platform in ("docker", "kubernetes"):
        backend = (REPO / "agent_runtime" / "backends" / f"{platform}.py").read_text(encoding="utf-8")
        options = re.findall(r"opts\.get\(\"([a-z_]+)\"", backend)
        names.update(f"STREAMSPACE_{platform.upper()}_{o.upper()}" for o in options)
    return names


def unknown_env_vars(names: set[str] | list[str]) -> set[str]:
    return set(names) - code_env_vars()


def require_tool(name: str, *fallbacks: str) -> str:
    """Path of an external tool that scripts/ensure-deploy-tools.sh installs: a failure in CI,
    a skip with the remedy elsewhere."""
    for candidate in (name, *fallbacks):
        found = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if found:
            return found
    unavailable(f"{name} is missing: run scripts/ensure-deploy-tools.sh (make services)")

"""deploy/systemd: `systemd-analyze verify` in a scratch root laid out like the documented
install (/opt/streamspace/.venv with the project's real entry points), the hardening score of
`systemd-analyze security`, and the environment contract with the code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, VENV_BIN, require_tool, unknown_env_vars

UNITS_DIR = DEPLOY / "systemd"
UNITS = sorted(UNITS_DIR.glob("*.service"))
INSTALL_VENV = "/opt/streamspace/.venv/bin/"
SYSTEM_UNITS = Path("/lib/systemd/system")


def directives(unit: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) in order; repeated keys (ExecStart, SystemCallFilter) are kept."""
    section, out = "", []
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def values_of(unit: Path, key: str) -> list[str]:
    return [v for _, k, v in directives(unit) if k == key]


def environment(unit: Path) -> dict[str, str]:
    env = {}
    for value in values_of(unit, "Environment"):
        name, _, val = value.strip('"').partition("=")
        env[name] = val
    return env


def exec_binaries(unit: Path) -> list[str]:
    return [v.split()[0] for _, k, v in directives(unit) if k.startswith("Exec")]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A scratch root: the distribution's units, a docker.service, ours, and the venv's entry points."""
    require_tool("systemd-analyze")
    if not SYSTEM_UNITS.is_dir():
        pytest.fail(f"{SYSTEM_UNITS} is missing: install systemd (scripts/ensure-deploy-tools.sh)")
    root = tmp_path_factory.mktemp("sysroot")
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    (root / "bin").mkdir()
    shutil.copy("/bin/true", root / "bin/true")
    (etc / "docker.service").write_text("[Unit]\nDescription=Docker\n[Service]\nExecStart=/bin/true\n")
    for unit in UNITS:
        shutil.copy(unit, etc / unit.name)
        for binary in exec_binaries(unit):
            assert binary.startswith(INSTALL_VENV), binary
            real = VENV_BIN / binary.removeprefix(INSTALL_VENV)
            assert real.is_file(), f"{binary}: {real.name} is not installed in the project's venv"
            target = root / binary.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(real, target)
    return root


def unit_name(unit: Path) -> str:
    return unit.name.replace("@.service", "@1.service")


def test_the_expected_units_exist():
    assert [u.name for u in UNITS] == [
        "streamspace-celery.service",
        "streamspace-control-plane.service",
        "streamspace-docker-agent@.service",
        "streamspace-migrate.service",
    ]


def test_systemd_analyze_verify_is_silent(root):
    tool = require_tool("systemd-analyze")
    names = [f"/etc/systemd/system/{unit_name(u)}" for u in UNITS]
    result = subprocess.run([tool, "verify", f"--root={root}", *names], capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values too: any message is a failure.
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stdout + result.stderr


def test_verify_would_catch_a_typo(root):
    tool = require_tool("systemd-analyze")
    broken = root / "etc/systemd/system/streamspace-typo.service"
    text = (UNITS_DIR / "streamspace-celery.service").read_text()
    broken.write_text(text.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    try:
        result = subprocess.run(
            [tool, "verify", f"--root={root}", "/etc/systemd/system/streamspace-typo.service"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        broken.unlink()
    assert "Unknown key" in result.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_hardening_exposure_is_low(root, unit):
    tool = require_tool("systemd-analyze")
    result = subprocess.run(
        [tool, "security", "--offline=true", f"--root={root}", unit_name(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_common_service_settings(unit):
    def one(key: str) -> str:
        (value,) = values_of(unit, key)
        return value

    assert one("User") == "streamspace"
    assert one("NoNewPrivileges") == "yes" and one("ProtectSystem") == "strict" and one("ProtectHome") == "yes"
    assert one("ReadWritePaths") == "/var/lib/streamspace" and one("StateDirectory") == "streamspace"
    assert one("EnvironmentFile").startswith("/etc/streamspace/")
    assert one("CapabilityBoundingSet") == ""
    if one("Type") != "oneshot":
        assert one("Restart") == "on-failure"
        assert one("WantedBy") == "multi-user.target"


def test_control_plane_runs_daphne_with_the_asgi_app():
    (exec_start,) = values_of(UNITS_DIR / "streamspace-control-plane.service", "ExecStart")
    # daphne through the launcher (uvloop, frozen heap), with daphne's own arguments.
    assert exec_start.startswith(INSTALL_VENV + "python -m streamspace.serve ")
    assert exec_start.endswith(" streamspace.asgi:application")
    (celery,) = values_of(UNITS_DIR / "streamspace-celery.service", "ExecStart")
    assert " --app=streamspace worker --beat " in celery


def test_docker_agent_unit_is_the_seed_example():
    unit = UNITS_DIR / "streamspace-docker-agent@.service"
    env = environment(unit)
    assert env["ENABLE_HA"] == "true" and env["HA_BACKEND"] == "file"
    assert env["FILE_LOCK_PATH"] == "/var/lib/streamspace/leader.lock" and env["LEASE_DURATION"] == "15s"
    assert values_of(unit, "SupplementaryGroups") == ["docker"]
    (exec_start,) = values_of(unit, "ExecStart")
    assert exec_start == INSTALL_VENV + "streamspace-agent --platform docker"


def test_the_agent_accepts_the_unit_configuration(tmp_path):
    from agent_runtime import cli
    from tests.deploy.test_compose import dotenv

    unit = UNITS_DIR / "streamspace-docker-agent@.service"
    env = {**environment(unit), **dotenv(UNITS_DIR / "streamspace-agent.env.example")}
    env["STREAMSPACE_AGENT_DATA_DIR"] = str(tmp_path)
    config = cli.config_from_args(cli.build_parser(env).parse_args(["--platform", "docker"]), env)
    assert config.lease.enabled and config.lease.backend == "file"
    assert config.lease.file_lock_path == "/var/lib/streamspace/leader.lock" and config.lease.lease_duration == 15
    assert config.agent_id == "docker-host-1"


def test_every_env_var_the_units_set_is_read_by_the_code():
    from tests.deploy.test_compose import dotenv

    for unit in UNITS:
        substituted = set(re.findall(r"\$\{([A-Z_]+)\}", " ".join(values_of(unit, "ExecStart"))))
        names = set(environment(unit)) - substituted
        assert unknown_env_vars(names) == set(), unit.name
    for example in ("streamspace.env.example", "streamspace-agent.env.example"):
        names = set(dotenv(UNITS_DIR / example)) - {"BIND_ADDRESS"}  # ExecStart's ${BIND_ADDRESS}
        assert unknown_env_vars(names) == set(), example

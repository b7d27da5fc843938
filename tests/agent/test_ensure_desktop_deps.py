"""``scripts/ensure-desktop-deps.sh`` (run by `make run` and `make services`): installs the
desktop's Debian packages when it may, and otherwise says once, with the exact command, what
is missing. Run here against stub programs on an otherwise empty PATH (``id``, ``sudo``,
``apt-get``), so nothing is installed and every branch can be taken as any user."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

SCRIPT = ROOT / "scripts" / "ensure-desktop-deps.sh"
APT_COMMAND = "sudo apt-get install -y --no-install-recommends xvfb openbox xterm xfonts-base xdotool x11-xserver-utils"


def stub(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def host(tmp_path: Path, *, uid: int, sudo_ok: bool = False, x: bool = False) -> tuple[Path, Path]:
    """A PATH of stubs: ``id -u`` answers ``uid``; ``apt-get install`` records its arguments
    and puts Xvfb, openbox, xterm, xdotool and xsetroot on the PATH; ``sudo -n`` succeeds only if ``sudo_ok``."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for tool in ("grep", "cut", "dirname", "cat"):
        (bin_dir / tool).symlink_to(f"/usr/bin/{tool}")
    stub(bin_dir, "id", f"echo {uid}")
    ok = 'shift; "$@"; exit' if sudo_ok else "exit 1"
    stub(bin_dir, "sudo", f'if [ "$1" = -n ]; then {ok}; fi; "$@"')
    stub(tmp_path, "x-program", "true")
    install_x = f"for p in Xvfb openbox xterm xdotool xsetroot; do /usr/bin/cp {tmp_path}/x-program {bin_dir}/$p; done"
    stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {calls}; if [ "$1" = install ]; then {install_x}; fi')
    if x:
        for program in ("Xvfb", "openbox", "xterm", "xdotool", "xsetroot"):
            stub(bin_dir, program, "true")
    return bin_dir, calls


def run(bin_dir: Path, *args: str, ci: bool = False) -> subprocess.CompletedProcess:
    env = {"PATH": str(bin_dir), "BIN": str(Path(sys.executable).parent), "HOME": os.environ.get("HOME", "/")}
    if ci:
        env["CI"] = "true"
    return subprocess.run(["/bin/bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)


def test_a_complete_host_is_left_alone_quietly(tmp_path):
    bin_dir, calls = host(tmp_path, uid=1000, x=True)
    result = run(bin_dir)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert not calls.exists()


def test_without_root_it_says_once_what_to_run_and_the_template_stays_unavailable(tmp_path):
    bin_dir, calls = host(tmp_path, uid=1000)
    result = run(bin_dir)
    assert result.returncode == 0 and not calls.exists()
    assert result.stdout.count("stays unavailable") == 1
    assert f"install with:  {APT_COMMAND}\n" in result.stdout
    assert run(bin_dir, ci=True).returncode == 1  # CI: the desktop test needs it


def test_as_root_or_with_a_silent_sudo_it_installs_the_packages(tmp_path):
    for uid, sudo_ok in ((0, False), (1000, True)):
        case = tmp_path / f"uid{uid}"
        case.mkdir()
        bin_dir, calls = host(case, uid=uid, sudo_ok=sudo_ok)
        result = run(bin_dir, ci=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert (
            "installing xvfb openbox xterm xfonts-base xdotool x11-xserver-utils" in result.stdout
            and "unavailable" not in result.stdout
        )
        assert calls.read_text().splitlines()[-1] == (
            "apt-get install -y -q --no-install-recommends xvfb openbox xterm xfonts-base xdotool x11-xserver-utils"
        )


def test_make_desktop_deps_may_prompt_for_sudo(tmp_path):
    bin_dir, calls = host(tmp_path, uid=1000, sudo_ok=False)
    result = run(bin_dir, "--sudo")
    assert result.returncode == 0 and "install" in calls.read_text()

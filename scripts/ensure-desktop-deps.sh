#!/usr/bin/env bash
# What the local agent's "Linux desktop (Selkies)" template needs (agent_runtime/desktop.py):
# Xvfb, a window manager and a terminal from Debian's packages, selkies (PyPI, pinned in
# requirements-dev.txt) in the virtualenv. Installs what is missing when it can: as root, with
# a sudo that does not prompt, or (--sudo, `make desktop-deps`) with one that may. When it
# cannot, it says so once, with the exact command, and exits 0: the local agent then does not
# offer the "desktop" feature and the catalog shows the template as unavailable. With CI=true
# a dependency it cannot install is an error (the desktop browser test needs it).
# Idempotent and quick when everything is present. Called by `make run` and `make services`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
PACKAGES=(xvfb openbox xterm xfonts-base)
ALLOW_PROMPT=false
[ "${1:-}" = "--sudo" ] && ALLOW_PROMPT=true
STRICT=false
[ "${CI:-}" = "true" ] && STRICT=true

say() { printf '[desktop] %s\n' "$*"; }
has_any() { for program in "$@"; do command -v "$program" >/dev/null 2>&1 && return 0; done; return 1; }
x_ready() { has_any Xvfb && has_any openbox xfwm4 fluxbox twm && has_any xfce4-terminal xterm; }
selkies_ready() { "$BIN/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("selkies") is None)' 2>/dev/null; }
cannot() {
  say "the \"Linux desktop (Selkies)\" template stays unavailable: $1"
  say "install it with:  $2"
  if $STRICT; then exit 1; fi
  exit 0
}

if ! selkies_ready; then
  pin=$(grep -E '^selkies==' requirements-dev.txt | cut -d' ' -f1)
  say "installing ${pin} into $BIN"
  "$BIN/pip" install -q "$pin" || cannot "pip could not install ${pin}" "$BIN/pip install ${pin}"
fi

x_ready && exit 0
apt_command="sudo apt-get install -y --no-install-recommends ${PACKAGES[*]}"
command -v apt-get >/dev/null || cannot "Xvfb, a window manager or a terminal is missing and this is not a Debian-like system" \
  "your package manager (packages: Xvfb, openbox, xterm)"
if [ "$(id -u)" = 0 ]; then
  as_root=()
elif sudo -n true 2>/dev/null || $ALLOW_PROMPT; then
  as_root=(sudo)
else
  cannot "Xvfb, a window manager or a terminal is missing and installing needs root" "$apt_command"
fi
apt_install() { DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null; }
say "installing ${PACKAGES[*]} (Debian packages)"
# Package lists may be missing (fresh machine) or stale (a 404 on install): refresh once, retry.
apt_install 2>/dev/null || { "${as_root[@]}" apt-get update -q >/dev/null && apt_install; } ||
  cannot "apt-get could not install ${PACKAGES[*]}" "$apt_command"
x_ready || cannot "the packages installed but Xvfb, openbox or xterm is still not on PATH" "$apt_command"
say "desktop dependencies installed"

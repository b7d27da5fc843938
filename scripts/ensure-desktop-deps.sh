#!/usr/bin/env bash
# What the local agent's "Linux desktop (Selkies)" template needs (agent_runtime/desktop.py):
# Xvfb, a window manager and a terminal from Debian's packages, xdotool and xsetroot (tests,
# the stream benchmark and automation drive the session's display with them), and selkies
# (PyPI, pinned in requirements-dev.txt) in the virtualenv. Installs what is missing when it can: as root, with
# a sudo that does not prompt, or (--sudo, `make desktop-deps`) with one that may. What it
# cannot install it names once, with the exact command, and exits 0: the local agent then does
# not offer the "desktop" feature and the catalog shows the template as unavailable. With
# CI=true what it cannot install is an error (the desktop browser test needs it).
# Idempotent, and quick when everything is present. Called by `make run` and `make services`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
PACKAGES=(xvfb openbox xterm xfonts-base xdotool x11-xserver-utils)
ALLOW_PROMPT=false
[ "${1:-}" = "--sudo" ] && ALLOW_PROMPT=true

say() { printf '[desktop] %s\n' "$*"; }
has_any() { for program in "$@"; do command -v "$program" >/dev/null 2>&1 && return 0; done; return 1; }
x_ready() { has_any Xvfb && has_any openbox xfwm4 fluxbox twm && has_any xfce4-terminal xterm && has_any xdotool && has_any xsetroot; }
selkies_ready() { "$BIN/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("selkies") is None)' 2>/dev/null; }

missing=()   # what is still missing at the end
commands=()  # how to install it

# Without the virtualenv yet, `make venv` installs selkies with the rest (requirements-dev.txt).
if [ -x "$BIN/python" ] && ! selkies_ready; then
  pin=$(grep -E '^selkies==' requirements-dev.txt | cut -d' ' -f1)
  say "installing ${pin} into $BIN"
  "$BIN/pip" install -q "$pin" && selkies_ready || { missing+=(selkies); commands+=("$BIN/pip install ${pin}"); }
fi

if ! x_ready; then
  apt_command="sudo apt-get install -y --no-install-recommends ${PACKAGES[*]}"
  as_root=()
  can_install=false
  if ! command -v apt-get >/dev/null; then
    apt_command="your package manager's Xvfb, openbox, xterm, xdotool and xsetroot packages"
  elif [ "$(id -u)" = 0 ]; then
    can_install=true
  elif $ALLOW_PROMPT || sudo -n true 2>/dev/null; then
    as_root=(sudo)
    can_install=true
  fi
  if $can_install; then
    apt_install() { DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null; }
    say "installing ${PACKAGES[*]} (Debian packages)"
    # Package lists may be missing (a fresh machine) or stale (a 404): refresh once and retry.
    apt_install 2>/dev/null || { "${as_root[@]}" apt-get update -q >/dev/null && apt_install; } || true
  fi
  x_ready || { missing+=("Xvfb, a window manager, a terminal, xdotool and xsetroot"); commands+=("$apt_command"); }
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
printf -v lacks '%s + ' "${missing[@]}"
printf -v run '%s && ' "${commands[@]}"
say "the \"Linux desktop (Selkies)\" template stays unavailable: this host lacks ${lacks% + }."
say "install with:  ${run% && }"
say "(the catalog offers it within seconds of the install; no restart needed)"
[ "${CI:-}" = "true" ] && exit 1
exit 0

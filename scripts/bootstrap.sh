#!/usr/bin/env bash
# System packages a fresh Debian machine needs before the virtualenv can be built.
# Only installs what is missing, and only when it can (root or sudo).
set -euo pipefail
missing=()
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v gcc >/dev/null || missing+=(gcc)
python3 -c 'import sysconfig,os,sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
  2>/dev/null || missing+=(python3-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "[bootstrap] installing ${missing[*]}"
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi
$SUDO apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}" >/dev/null

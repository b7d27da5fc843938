#!/usr/bin/env bash
# What `make images` (scripts/build-images.sh) needs to make a Debian root filesystem with no
# registry: Debian's mmdebstrap. Installs it when missing (as root or with sudo). Idempotent.
set -euo pipefail
log() { printf '[image-tools] %s\n' "$*"; }
command -v mmdebstrap >/dev/null && exit 0
if [ "$(id -u)" = 0 ]; then as_root=(); else as_root=(sudo); fi
if ! command -v apt-get >/dev/null; then
  log "mmdebstrap is missing and this is not a Debian/Ubuntu host: install mmdebstrap, or build"
  log "the images with their Dockerfiles (deploy/README.md, "Session images")"
  exit 1
fi
log "installing mmdebstrap (Debian package)"
install() { DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends mmdebstrap >/dev/null; }
install 2>/dev/null || { "${as_root[@]}" apt-get update -q >/dev/null && install; }
command -v mmdebstrap >/dev/null

#!/usr/bin/env bash
# Make sure a Docker engine answers on the default socket (or $DOCKER_HOST) and that the
# local test image exists: installs Debian's docker.io when missing (root/sudo), starts
# dockerd when it is not running, waits for it, then builds tests/images (no pulls).
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[docker] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v docker >/dev/null || ! command -v dockerd >/dev/null; then
  log "installing docker.io"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q docker.io >/dev/null \
    || { as_root apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q docker.io >/dev/null; }
fi

if ! docker info >/dev/null 2>&1; then
  if [ -n "${DOCKER_HOST:-}" ]; then
    log "DOCKER_HOST=$DOCKER_HOST does not answer"; exit 1
  fi
  log "starting dockerd"
  as_root sh -c 'nohup dockerd >/var/log/dockerd-streamspace.log 2>&1 &'
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up (see /var/log/dockerd-streamspace.log)"; exit 1; }
fi
log "Docker engine ready ($(docker version -f '{{.Server.Version}}'))"

tests/images/build.sh

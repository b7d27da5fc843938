#!/usr/bin/env bash
# Tools the deploy/ tests (tests/deploy) run: promtool (Prometheus rule checks and rule unit
# tests), nginx (the compose load-balancer config) and systemd-analyze (unit verification);
# and wrk, which bench/proxy_bench.py drives (nginx is one of that benchmark's targets too);
# docker-compose and mmdebstrap, with which tests/deploy/test_compose_stack.py and
# test_compose_sentinel.py bring the compose deployment up from images built here
# (tests/deploy/compose_images.sh).
# Helm rendering, Kubernetes schemas, Compose parsing and hadolint come from PyPI
# (requirements-dev.txt). Idempotent; installs from Debian's packages only when missing.
set -euo pipefail

log() { printf '[deploy-tools] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_ready() {
  command -v apt-get >/dev/null || { log "cannot install $*: no apt-get"; return 1; }
  [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] || as_root apt-get update -q
}
# Install Debian packages without starting their services (nginx would bind port 80).
apt_install_quiet() {
  apt_ready "$@"
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null; as_root chmod +x "$policy"; created=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends "$@" >/dev/null
  [ "$created" = 0 ] || as_root rm -f "$policy"
}

# promtool: only the binary out of Debian's prometheus package (the package itself would
# install and start a Prometheus server).
if ! command -v promtool >/dev/null; then
  apt_ready prometheus
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  log "extracting promtool from Debian's prometheus package"
  (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1)
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
  as_root install -m 0755 "$tmp/root/usr/bin/promtool" /usr/local/bin/promtool
fi
log "promtool: $(promtool --version 2>&1 | head -1)"

if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  log "installing nginx"; apt_install_quiet nginx-light
fi
log "nginx: $( (command -v nginx || echo /usr/sbin/nginx) )"

# ss (iproute2): tests/test_serve.py reads the listening socket's backlog with it.
if ! command -v ss >/dev/null; then
  log "installing iproute2 (for ss)"; apt_install_quiet iproute2
fi
log "ss: $(command -v ss)"

if ! command -v systemd-analyze >/dev/null; then
  log "installing systemd (for systemd-analyze)"; apt_install_quiet systemd
fi
log "systemd-analyze: $(systemd-analyze --version | head -1)"

if ! command -v wrk >/dev/null; then
  log "installing wrk (bench/proxy_bench.py)"; apt_install_quiet wrk
fi
log "wrk: $(command -v wrk)"

if ! command -v docker-compose >/dev/null; then
  log "installing docker-compose (tests/deploy/test_compose_*.py)"; apt_install_quiet docker-compose
fi
log "docker-compose: $(docker-compose --version 2>/dev/null | head -1)"

if ! command -v mmdebstrap >/dev/null; then
  log "installing mmdebstrap (tests/deploy/compose_images.sh)"; apt_install_quiet mmdebstrap
fi
log "mmdebstrap: $(command -v mmdebstrap)"


#!/usr/bin/env bash
# Make sure the services the test suite talks to are up on 127.0.0.1:
# PostgreSQL (5432) and Redis (6379); and Debian's redis-sentinel installed (the Sentinel tests
# start their own, tests/support/sentinel.py). Installs from Debian's packages what is missing
# when we are root; starts what is stopped. Idempotent.
set -euo pipefail

log() { printf '[services] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  command -v apt-get >/dev/null || { log "cannot install $*: no apt-get"; return 1; }
  [ -f /var/lib/apt/periodic/update-success-stamp ] || [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] \
    || as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q "$@" >/dev/null
}
wait_for() { # wait_for NAME CMD...
  local name=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  log "$name did not come up"; return 1
}

# --- PostgreSQL -------------------------------------------------------------------------
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if ! command -v pg_ctlcluster >/dev/null; then
    log "installing PostgreSQL"; apt_install postgresql
  fi
  version=$(ls /etc/postgresql | sort -V | tail -1)
  log "starting PostgreSQL $version"
  if ! pg_lsclusters -h | grep -q "^$version main"; then as_root pg_createcluster "$version" main >/dev/null; fi
  conf=/etc/postgresql/$version/main
  # Local trust on loopback: this is a test database on a developer/CI machine.
  if ! grep -q "streamspace-test" "$conf/pg_hba.conf"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust # streamspace-test\nhost all all ::1/128 trust # streamspace-test' \
      "$conf/pg_hba.conf"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
fi
psql_super() { psql -h 127.0.0.1 -U postgres -d postgres -tAq "$@"; }
psql_super -c "SELECT 1" >/dev/null
if [ "$(psql_super -c "SELECT 1 FROM pg_database WHERE datname='streamspace'")" != "1" ]; then
  psql_super -c "CREATE DATABASE streamspace" >/dev/null
fi
log "PostgreSQL ready on 127.0.0.1:5432"

# --- Redis ------------------------------------------------------------------------------
if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  command -v redis-server >/dev/null || { log "installing Redis"; apt_install redis-server; }
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
fi
log "Redis ready on 127.0.0.1:6379"

# --- Redis Sentinel (binary only: tests/support/sentinel.py starts its own Sentinels) -------
if ! command -v redis-sentinel >/dev/null; then
  log "installing redis-sentinel"; apt_install redis-sentinel
  # The package starts a system Sentinel on 26379; the tests use their own on free ports.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then as_root systemctl disable --now redis-sentinel >/dev/null 2>&1 || true; fi
fi
log "redis-sentinel: $(command -v redis-sentinel)"

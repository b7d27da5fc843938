#!/usr/bin/env bash
# Real peers for the tests: the npm OpenID Provider for the SSO tests (tests/identity/oidc,
# installed from its package-lock.json), xmlsec1, which pysaml2 uses to sign and verify SAML
# assertions, and Debian's coturn, the TURN server the WebRTC credential tests allocate relays
# on (tests/proxy/test_turn_coturn.py; the tests start their own turnserver, never a system
# service). Idempotent; installs only what is missing.
set -euo pipefail

log() { printf '[test-peers] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
root=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v xmlsec1 >/dev/null; then
  log "installing xmlsec1"
  [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] || as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q xmlsec1 >/dev/null
fi

if ! command -v turnserver >/dev/null; then
  log "installing coturn"
  [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] || as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends coturn >/dev/null
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "installing Node.js and npm"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q nodejs npm >/dev/null
fi

oidc="$root/tests/identity/oidc"
stamp="$oidc/node_modules/.package-lock.json"
if [ ! -f "$stamp" ] || [ "$oidc/package-lock.json" -nt "$stamp" ]; then
  log "installing the test OpenID Provider (npm ci)"
  (cd "$oidc" && npm ci --no-audit --no-fund --loglevel=error)
fi
log "ready: xmlsec1 $(xmlsec1 --version | head -1), node $(node --version), $(command -v turnserver)"

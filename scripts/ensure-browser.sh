#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the browser tests (Playwright drives it with
# executable_path=/usr/bin/chromium; `playwright install` is never used). Idempotent.
set -euo pipefail

log() { printf '[browser] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# fonts-dejavu-core: the only fonts the no-emoji browser test gives Chromium (tests/icons);
# fonts-noto-color-emoji: emoji in user-made content (the catalog's own icons need none).
if [ -x /usr/bin/chromium ] && [ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] && command -v fc-list >/dev/null; then
  log "chromium present: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"
  exit 0
fi
command -v apt-get >/dev/null || { log "cannot install chromium: no apt-get"; exit 1; }
[ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] || as_root apt-get update -q
log "installing chromium"
DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends chromium fontconfig fonts-dejavu-core fonts-noto-color-emoji >/dev/null
log "chromium installed: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"

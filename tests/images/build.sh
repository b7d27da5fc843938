#!/usr/bin/env bash
# Build the local test image `streamspace-test-session:latest` without pulling anything:
# FROM scratch + Debian's busybox-static (a shell and tools for `docker exec`, nc and wget among
# them for the isolation tests) + websocketd,
# which serves /www over HTTP and a WebSocket echo (`cat`, one message per line) on :8080.
# websocketd is a Go binary linked only against libc, which is copied in with its loader.
# Idempotent: rebuilds only when the inputs changed (the image carries their hash as a label).
set -euo pipefail
IMAGE=${IMAGE:-streamspace-test-session:latest}
log() { printf '[test-image] %s\n' "$*"; }

need=()
# busybox-static, not the dynamic busybox: the image has no libraries for it.
{ ldd /bin/busybox 2>&1 || true; } | grep -q "not a dynamic" || need+=(busybox-static)
command -v websocketd >/dev/null || need+=(websocketd)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}" >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}" >/dev/null; }
fi

WSD=$(command -v websocketd)
libs=$(ldd "$WSD" | awk '/=>/ {print $3} /ld-linux/ {print $1}' | sort -u)
hash=$(cat /bin/busybox "$WSD" $libs "$0" | sha256sum | cut -c1-16)
if [ "$(docker image inspect -f '{{ index .Config.Labels "streamspace.test-image-hash" }}' "$IMAGE" 2>/dev/null)" = "$hash" ]; then
  log "$IMAGE is up to date"
  exit 0
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/www" "$ctx/rootfs/home/user" "$ctx/rootfs/tmp"
cp /bin/busybox "$ctx/rootfs/bin/busybox"
for tool in sh cat ls echo sleep mkdir touch rm id ps wget nc timeout env df grep ip; do ln -s busybox "$ctx/rootfs/bin/$tool"; done
cp "$WSD" "$ctx/rootfs/bin/websocketd"
for lib in $libs; do mkdir -p "$ctx/rootfs$(dirname "$lib")"; cp -L "$lib" "$ctx/rootfs$lib"; done
# The loader is looked up under /lib64 on x86-64 whatever ldd printed.
if [ -e /lib64/ld-linux-x86-64.so.2 ]; then mkdir -p "$ctx/rootfs/lib64"; cp -L /lib64/ld-linux-x86-64.so.2 "$ctx/rootfs/lib64/"; fi
cat > "$ctx/rootfs/www/index.html" <<'HTML'
<!doctype html><title>streamspace test session</title><h1>streamspace test session</h1>
HTML
cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
ENV PATH=/bin HOME=/home/user
LABEL streamspace.test-image-hash="$hash"
EXPOSE 8080
CMD ["/bin/websocketd", "--port=8080", "--staticdir=/www", "--loglevel=error", "/bin/cat"]
DOCKERFILE
log "building $IMAGE"
out=$(DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$ctx" 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
log "built $IMAGE"

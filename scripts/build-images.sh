#!/usr/bin/env bash
# `make images`: build the StreamSpace session images (deploy/images/) with no registry at all.
#
#   scripts/build-images.sh [desktop|terminal|firefox|libreoffice ...]   (default: all of them)
#
# The desktop image's Debian root filesystem is made by mmdebstrap from Debian's packages
# (scripts/ensure-image-tools.sh installs it), with deploy/images/desktop/setup.sh run inside
# the chroot (the packages, selkies from PyPI, the session user); it is cached as a tarball
# under $STREAMSPACE_IMAGE_CACHE (default ~/.cache/streamspace/images), named by the hash of
# its inputs, and loaded with `docker import`. The desktop image is then the normal
# deploy/images/desktop/Dockerfile built on that root filesystem (DEBIAN_BASE), and each app
# image its own Dockerfile on the desktop image: the same images as a registry build, tagged
# ghcr.io/streamspace-dev/<name>:<version> (version: pyproject.toml).
#
# Cached: the root filesystem is named by the hash of what goes into it (ROOTFS_INPUTS and
# ROOTFS_RECIPE), and each image carries the hash of its inputs (its directory, the version,
# and the root filesystem's or the desktop's hash) as the label streamspace.image-inputs; an
# image whose label matches is not rebuilt, so a warm run takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[images] %s\n' "$*"; }

REGISTRY=ghcr.io/streamspace-dev
APPS=(terminal firefox libreoffice)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
CACHE=${STREAMSPACE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streamspace/images}
LABEL=streamspace.image-inputs

wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(desktop "${APPS[@]}")
for name in "${wanted[@]}"; do
  [ -f "deploy/images/$name/Dockerfile" ] || { log "no image named '$name' (deploy/images/<name>/Dockerfile)"; exit 2; }
done

# What the root filesystem is made of; change ROOTFS_RECIPE when the mmdebstrap call changes.
ROOTFS_RECIPE="bookworm main+updates+security, variant apt, setup.sh in a clean environment (1)"
ROOTFS_INPUTS=(deploy/images/desktop/packages.txt deploy/images/desktop/requirements.txt deploy/images/desktop/setup.sh)

inputs_hash() {  # the hash of a directory's files and the version (+ extra words)
  { find "deploy/images/$1" -type f ! -path "*/__pycache__/*" -print0 | sort -z | xargs -0 sha256sum; echo "$VERSION ${*:2}"; } \
    | sha256sum | cut -c1-16
}
current_label() { docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true; }

build() {  # build <name> <hash> <docker build args...>
  local name=$1 hash=$2 image="$REGISTRY/$1:$VERSION"
  if [ "$(current_label "$image")" = "$hash" ]; then
    log "$image is up to date"
    return
  fi
  log "building $image"
  local started=$SECONDS
  local out
  out=$(DOCKER_BUILDKIT=0 docker build -q --label "$LABEL=$hash" --build-arg "VERSION=$VERSION" "${@:3}" \
    -t "$image" "deploy/images/$name" 2>&1) || { printf '%s\n' "$out" >&2; log "building $image failed"; exit 1; }
  log "built $image in $((SECONDS - started)) s"
}

rootfs_hash=$({ sha256sum "${ROOTFS_INPUTS[@]}"; echo "$ROOTFS_RECIPE"; } | sha256sum | cut -c1-16)
desktop_hash=$(inputs_hash desktop "$rootfs_hash")
needs_desktop=false
for name in "${wanted[@]}"; do
  if [ "$name" = desktop ]; then needs_desktop=true
  elif [ "$(current_label "$REGISTRY/$name:$VERSION")" != "$(inputs_hash "$name" "$desktop_hash")" ]; then needs_desktop=true
  fi
done

if $needs_desktop && [ "$(current_label "$REGISTRY/desktop:$VERSION")" != "$desktop_hash" ]; then
  rootfs_image="streamspace.local/desktop-rootfs:$rootfs_hash"
  if ! docker image inspect "$rootfs_image" >/dev/null 2>&1; then
    tarball="$CACHE/desktop-rootfs-$rootfs_hash.tar"
    if [ ! -s "$tarball" ]; then
      scripts/ensure-image-tools.sh
      mkdir -p "$CACHE"
      log "making the Debian bookworm root filesystem with mmdebstrap (a few minutes, once)"
      started=$SECONDS
      include=$(grep -v '^#' deploy/images/desktop/packages.txt | paste -sd, -)
      # setup.sh runs with a clean environment (the host's pip settings name host paths), but
      # pip trusts the host's certificate authorities and uses its proxy, if any: the chroot
      # reaches PyPI the way the host does (e.g. through a TLS-inspecting proxy). The host's
      # CA bundle is removed again before the root filesystem is packed.
      proxies=()
      for name in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        [ -n "${!name:-}" ] && proxies+=("$name=${!name}")
      done
      mmdebstrap --quiet --variant=apt --format=tar --include="$include" \
        --customize-hook='mkdir -p "$1/usr/local/lib/streamspace"' \
        --customize-hook='copy-in deploy/images/desktop/packages.txt deploy/images/desktop/requirements.txt deploy/images/desktop/setup.sh /usr/local/lib/streamspace/' \
        --customize-hook='cp /etc/ssl/certs/ca-certificates.crt "$1/tmp/host-ca.crt"' \
        --customize-hook="chroot \"\$1\" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
          PIP_CERT=/tmp/host-ca.crt ${proxies[*]} /usr/local/lib/streamspace/setup.sh" \
        --customize-hook='rm -f "$1/tmp/host-ca.crt"' \
        bookworm "$tarball.partial" \
        "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian bookworm-updates main" \
        "deb http://deb.debian.org/debian-security bookworm-security main"
      mv "$tarball.partial" "$tarball"
      log "root filesystem ready in $((SECONDS - started)) s: $tarball"
      # Older root filesystems of the desktop are of no further use.
      find "$CACHE" -maxdepth 1 -name 'desktop-rootfs-*.tar*' ! -name "desktop-rootfs-$rootfs_hash.tar" -delete
    fi
    log "loading the root filesystem as $rootfs_image"
    docker import "$tarball" "$rootfs_image" >/dev/null
  fi
  build desktop "$desktop_hash" --build-arg "DEBIAN_BASE=$rootfs_image"
  # The root filesystem image is only the desktop's first layer: keep the newest, drop older ones.
  docker images --format '{{.Repository}}:{{.Tag}}' streamspace.local/desktop-rootfs \
    | grep -v ":$rootfs_hash\$" | xargs -r docker rmi -f >/dev/null 2>&1 || true
elif $needs_desktop; then
  log "$REGISTRY/desktop:$VERSION is up to date"
fi

for name in "${wanted[@]}"; do
  [ "$name" = desktop ] && continue
  build "$name" "$(inputs_hash "$name" "$desktop_hash")"
done

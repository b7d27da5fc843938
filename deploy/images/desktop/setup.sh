#!/bin/sh
# Makes a Debian bookworm root filesystem into the StreamSpace desktop image, as root inside
# it: the packages of packages.txt, selkies (requirements.txt) in /opt/selkies, the session
# user (uid 1000, home /home/user). Idempotent: what is already there is kept, so it runs
# both in the Dockerfile (on debian:bookworm-slim) and in `make images` (inside the
# mmdebstrap chroot, where everything is installed once, then again in the Dockerfile's
# build on that root filesystem, where it finds nothing to do).
set -eu
here=$(dirname "$0")

missing=""
for package in $(grep -v '^#' "$here/packages.txt"); do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
  apt-get update -q
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb

if ! cmp -s "$here/requirements.txt" /opt/selkies/requirements.txt; then
  python3 -m venv /opt/selkies
  /opt/selkies/bin/pip install -q --no-cache-dir --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" /opt/selkies/requirements.txt
fi
find /opt/selkies -name __pycache__ -prune -exec rm -rf {} +

if ! getent passwd 1000 >/dev/null; then
  useradd --uid 1000 --user-group --home-dir /home/user --shell /bin/bash user
fi
install -d -o 1000 -g 1000 -m 0755 /home/user
install -d -m 1777 /tmp/.X11-unix

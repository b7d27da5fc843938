#!/usr/bin/env bash
# Build, without pulling any image, what tests/deploy/test_compose_stack.py and
# test_compose_sentinel.py run the compose deployment with:
#
#   streamspace-stack/base:<hash>           Debian bookworm from Debian's packages (mmdebstrap):
#                                           python3, PostgreSQL 15, Redis and its Sentinel, nginx,
#                                           and /data (redis:7's data directory); it stands in
#                                           for postgres:16, redis:7 and nginx:1.27
#   streamspace-stack/control-plane:<hash>  the base + requirements.txt + this checkout, laid out
#                                           as deploy/docker/Dockerfile.control-plane lays it out
#   streamspace-stack/agent:<hash>          the same, started as `streamspace-agent`
#
# Cached: each image carries the hash of its inputs in its tag and is rebuilt only when they
# change (the root file system and the installed requirements are kept under CACHE). Prints
# the three tags as shell assignments (BASE=..., CONTROL_PLANE=..., AGENT=...).
set -euo pipefail
SCRIPT=$(realpath "$0")
ROOT=$(cd "$(dirname "$SCRIPT")/../.." && pwd)
CACHE=${CACHE:-$ROOT/.streamspace/compose-images}
PACKAGES="python3,python-is-python3,postgresql-15,postgresql-client-15,redis-server,redis-sentinel,redis-tools,nginx-light,ca-certificates,xmlsec1,libpq5"
log() { printf '[compose-images] %s\n' "$*" >&2; }
has_image() { docker image inspect "$1" >/dev/null 2>&1; }
mkdir -p "$CACHE"

base_hash=$(printf '%s\n' "$PACKAGES" "$(sed -n '/^# base:begin/,/^# base:end/p' "$SCRIPT")" | sha256sum | cut -c1-16)
BASE="streamspace-stack/base:$base_hash"
# base:begin
if ! has_image "$BASE"; then
  command -v mmdebstrap >/dev/null || { log "mmdebstrap is missing (apt-get install mmdebstrap)"; exit 1; }
  log "building $BASE (Debian bookworm root file system, a few minutes once)"
  mmdebstrap --variant=apt --include="$PACKAGES" \
    --customize-hook='rm -f "$1"/etc/nginx/sites-enabled/default' \
    --customize-hook='install -d -o 0 -g 0 "$1"/var/run/postgresql' \
    --customize-hook='install -d -o 0 -g 0 "$1"/data' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$CACHE/base.tar" >&2
  docker import "$CACHE/base.tar" "$BASE" >/dev/null
  rm -f "$CACHE/base.tar"
fi
# base:end

# The control plane's requirements, installed by the checkout's venv (any CPython 3.11: the
# wheels are the image's too) into a directory copied into the image. EXTRA: what a marker
# asks for on the image's Debian 3.11.2 but not on a newer 3.11 (redis: python < 3.11.3).
EXTRA="async-timeout"
req_hash=$( (cat "$ROOT/requirements.txt"; echo "$EXTRA") | sha256sum | cut -c1-16)
SITE="$CACHE/site-$req_hash"
if [ ! -e "$SITE/.complete" ]; then
  log "installing requirements.txt into $SITE"
  rm -rf "$SITE"
  "$ROOT/.venv/bin/pip" install -q --no-compile --target "$SITE/lib" -r "$ROOT/requirements.txt" $EXTRA >&2
  touch "$SITE/.complete"
fi

ctx=$(mktemp -d -p "$CACHE")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/app" "$ctx/bin"
(cd "$ROOT" && cp -r manage.py pyproject.toml streamspace sessions_app agents_app plugins_app agent_runtime templates static "$ctx/app/")
find "$ctx/app" -name __pycache__ -prune -exec rm -rf {} +
cp "$ROOT/deploy/docker/healthcheck.py" "$ctx/bin/streamspace-healthcheck"
# The agent's backends are found through its package's entry points (pyproject.toml), which
# an installed distribution declares in its dist-info.
dist="$ctx/app/streamspace_agent-0.dist-info"
mkdir -p "$dist"
printf 'Metadata-Version: 2.1\nName: streamspace-agent\nVersion: 0\n' > "$dist/METADATA"
sed -n '/^\[project.entry-points."streamspace.agent_backends"\]/,/^$/p' "$ROOT/pyproject.toml" \
  | sed 's/^\[project.entry-points."\(.*\)"\]/[\1]/' | tr -d '"' > "$dist/entry_points.txt"
printf '#!/bin/sh\nexec python3 -m celery "$@"\n' > "$ctx/bin/celery"
printf '#!/bin/sh\nexec python3 -m agent_runtime.cli "$@"\n' > "$ctx/bin/streamspace-agent"
chmod 0755 "$ctx/bin/"*
app_hash=$( (cd "$ctx" && find app bin -type f -print0 | sort -z | xargs -0 sha256sum; echo "$BASE $req_hash"; sed -n '/^# app:begin/,/^# app:end/p' "$SCRIPT") | sha256sum | cut -c1-16)
CONTROL_PLANE="streamspace-stack/control-plane:$app_hash"
AGENT="streamspace-stack/agent:$app_hash"
# app:begin
if ! has_image "$CONTROL_PLANE" || ! has_image "$AGENT"; then
  log "building $CONTROL_PLANE and $AGENT"
  cp -al "$SITE/lib" "$ctx/site" 2>/dev/null || cp -r "$SITE/lib" "$ctx/site"
  cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM $BASE
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/app:/opt/site \
    DJANGO_SETTINGS_MODULE=streamspace.settings STREAMSPACE_DATA_DIR=/var/lib/streamspace DEBUG=false PORT=8000
COPY site/ /opt/site/
COPY bin/ /usr/local/bin/
RUN groupadd --system --gid 10001 streamspace \
    && useradd --system --uid 10001 --gid streamspace --home-dir /app --no-create-home --shell /usr/sbin/nologin streamspace
WORKDIR /app
COPY app/ /app/
RUN install -d -o streamspace -g streamspace "\$STREAMSPACE_DATA_DIR" \
    && SECRET_KEY=collectstatic-build-only python manage.py collectstatic --noinput -v0 \
    && chown -R streamspace:streamspace "\$STREAMSPACE_DATA_DIR"
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=3s --timeout=5s --start-period=20s --retries=20 CMD ["streamspace-healthcheck"]
CMD ["sh", "-c", "exec python -m streamspace.serve --bind 0.0.0.0 --port \"\$PORT\" --websocket_timeout -1 streamspace.asgi:application"]
DOCKERFILE
  out=$(DOCKER_BUILDKIT=0 docker build -q -t "$CONTROL_PLANE" "$ctx" 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
  cat > "$ctx/Dockerfile.agent" <<DOCKERFILE
FROM $CONTROL_PLANE
USER 0
ENV STREAMSPACE_AGENT_DATA_DIR=/var/lib/streamspace-agent
RUN install -d -o streamspace -g streamspace /var/lib/streamspace-agent
WORKDIR /var/lib/streamspace-agent
USER 10001:10001
HEALTHCHECK NONE
ENTRYPOINT ["streamspace-agent"]
CMD []
DOCKERFILE
  out=$(DOCKER_BUILDKIT=0 docker build -q -f "$ctx/Dockerfile.agent" -t "$AGENT" "$ctx/bin" 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
fi
# app:end
printf 'BASE=%s\nCONTROL_PLANE=%s\nAGENT=%s\n' "$BASE" "$CONTROL_PLANE" "$AGENT"

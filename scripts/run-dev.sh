#!/usr/bin/env bash
# `make run`: the control plane (daphne), a local agent, a Docker agent when this host has the
# session images, and the in-process job runner, as one foreground command. Ctrl-C (or any of
# them exiting) stops all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
DATA=${STREAMSPACE_DATA_DIR:-$PWD/.streamspace}
# One site for the portal and its sessions: the portal at streamspace.localhost, each session
# at <id>.streamspace.localhost (browsers resolve *.localhost to the loopback and treat it as a
# secure context). Sessions then keep their storage in browsers that block third-party storage.
export STREAMSPACE_SESSION_DOMAIN=${STREAMSPACE_SESSION_DOMAIN:-streamspace.localhost}
pids=()
cleanup() { trap - INT TERM EXIT; for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait || true; }
trap cleanup INT TERM EXIT

# daphne through streamspace.serve (uvloop, a frozen heap: streamspace/serve.py).
# --websocket_timeout -1: daphne otherwise closes every WebSocket (viewer streams, agent links)
# after 24 h. POD_URL: where agents open session tunnels to this replica.
POD_URL=${POD_URL:-http://$HOST:$PORT} $BIN/python -m streamspace.serve -b "$HOST" -p "$PORT" --websocket_timeout -1 \
  streamspace.asgi:application &
pids+=($!)

# The local agent: its token is re-issued on every start (tokens are stored hashed).
# `make run` is one person's machine, so sessions run as that person: the venv's interpreter
# may sit where other accounts cannot read it (under /root, say). Sessions still get a scrubbed
# environment. A shared host runs the agent unprivileged or names a session user
# (STREAMSPACE_LOCAL_SESSION_USER, docs/local-agent.md).
$BIN/python manage.py ensure_local_agent --token-file "$DATA/local-agent.token" >/dev/null
AGENT_TOKEN=$(cat "$DATA/local-agent.token") STREAMSPACE_LOCAL_SESSION_USER=${STREAMSPACE_LOCAL_SESSION_USER:-$(id -un)} \
  $BIN/streamspace-agent --platform local \
  --control-plane "http://$HOST:$PORT" --agent-id local &
pids+=($!)

# A Docker agent when an engine answers and holds session images (ghcr.io/streamspace-dev/*,
# built by `make images`): the image templates then launch here too. It never pulls,
# so a template whose image is not on this host shows as unavailable with that reason.
session_images=$($BIN/python - 2>/dev/null <<'PY' || true
import docker

client = docker.from_env(timeout=3)
client.ping()
print(" ".join(sorted(t for i in client.images.list() for t in i.tags if t.startswith("ghcr.io/streamspace-dev/"))))
PY
)
if [ -n "$session_images" ]; then
  $BIN/python manage.py ensure_local_agent --platform docker --agent-id local-docker \
    --token-file "$DATA/local-docker-agent.token" >/dev/null
  AGENT_TOKEN=$(cat "$DATA/local-docker-agent.token") $BIN/streamspace-agent --platform docker \
    --control-plane "http://$HOST:$PORT" --agent-id local-docker --data-dir "$DATA/docker-agent" \
    --backend-option pull=never &
  pids+=($!)
  echo "Docker agent 'local-docker' started (session images here: $session_images)"
fi

# Periodic jobs (idle sweep, command sweep, ...) in-process when no Celery broker is configured.
if [ -z "${REDIS_URL:-}" ] && [ -z "${REDIS_SENTINELS:-}" ] && $BIN/python manage.py help run_jobs >/dev/null 2>&1; then
  $BIN/python manage.py run_jobs &
  pids+=($!)
fi

echo "StreamSpace on http://streamspace.localhost:$PORT/ (also http://$HOST:$PORT/; API docs /api/docs/, admin /admin/, health /healthz)"
wait -n

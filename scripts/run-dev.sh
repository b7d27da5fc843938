#!/usr/bin/env bash
# `make run`: the control plane (daphne), a local agent and the in-process job runner, as one
# foreground command. Ctrl-C (or any of them exiting) stops all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
DATA=${STREAMSPACE_DATA_DIR:-$PWD/.streamspace}
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

# Periodic jobs (idle sweep, command sweep, ...) in-process when no Celery broker is configured.
if [ -z "${REDIS_URL:-}" ] && $BIN/python manage.py help run_jobs >/dev/null 2>&1; then
  $BIN/python manage.py run_jobs &
  pids+=($!)
fi

echo "StreamSpace on http://$HOST:$PORT/  (API docs /api/docs/, admin /admin/, health /healthz)"
wait -n

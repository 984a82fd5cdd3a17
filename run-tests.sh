#!/usr/bin/env bash
# The tests: set up .venv if needed, build the docs site (mkdocs --strict: a broken link or page fails the run), make sure Redis, RabbitMQ and PostgreSQL answer, run pytest (arguments pass through).
# A redis-server this script had to start is stopped when the tests end (its log stays in
# $TRACEJUDGE_RUN_DIR, default .tracejudge/run/); a Redis that was already running is left alone.
set -euo pipefail
cd "$(dirname "$0")"
export TRACEJUDGE_RUN_DIR="${TRACEJUDGE_RUN_DIR:-$PWD/.tracejudge/run}"
pidfile="$TRACEJUDGE_RUN_DIR/redis-${REDIS_PORT:-6379}.pid"
scripts/bootstrap.sh
# not --quiet: mkdocs 1.6 then drops the warnings before --strict counts them, and a broken link passes
echo "[docs] mkdocs build --strict"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict -d "$TRACEJUDGE_RUN_DIR/site"
# a pidfile left by a run that was killed names no live process: forget it
if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then rm -f "$pidfile"; fi
had_pidfile=""
[ -f "$pidfile" ] && had_pidfile=yes
scripts/ensure-redis.sh
started=""
if [ -z "$had_pidfile" ] && [ -f "$pidfile" ]; then started="$(cat "$pidfile")"; fi
stop_redis() {
  if [ -n "$started" ] && kill -0 "$started" 2>/dev/null; then
    kill "$started"
    for _ in $(seq 1 50); do kill -0 "$started" 2>/dev/null || break; sleep 0.1; done
    rm -f "$pidfile"
    echo "[redis] stopped the redis-server we started (pid $started; log $TRACEJUDGE_RUN_DIR/redis-${REDIS_PORT:-6379}.log)"
  fi
}
trap stop_redis EXIT
scripts/ensure-rabbitmq.sh
scripts/ensure-postgres.sh   # the redaction test's MLflow store (starts a private trust-auth cluster if none answers)
scripts/ensure-chromium.sh   # the dashboard's browser test (skipped with a reason if none can be had)
scripts/ensure-prometheus.sh # promtool over deploy/prometheus/alerts.yml and a real scrape of a worker (skipped with a reason if none)
.venv/bin/python -m pytest "$@"

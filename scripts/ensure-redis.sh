#!/usr/bin/env bash
# Make sure a Redis answers at $REDIS_HOST:$REDIS_PORT (default 127.0.0.1:6379): start
# redis-server if none does, installing Debian's redis-server first if it is missing.
# A server it starts logs to $TRACEJUDGE_RUN_DIR/redis-$port.log (default .tracejudge/run/ in the
# repository) and its pid goes to $TRACEJUDGE_RUN_DIR/redis-$port.pid, so the caller can stop it
# (run-tests.sh does, when the tests end); a Redis that was already answering is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
host="${REDIS_HOST:-127.0.0.1}"
port="${REDIS_PORT:-6379}"
run_dir="${TRACEJUDGE_RUN_DIR:-$PWD/.tracejudge/run}"
answers() {
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(redis-cli -h "$host" -p "$port" ping 2>/dev/null)" = "PONG" ]
  else
    # no client: speak RESP over bash's /dev/tcp
    exec 3<>"/dev/tcp/$host/$port" 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    read -r -t 2 reply <&3 || true
    exec 3>&- 3<&-
    [ "${reply%$'\r'}" = "+PONG" ]
  fi
}
if answers; then
  echo "[redis] answering at $host:$port"
  exit 0
fi
if ! command -v redis-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    echo "[redis] installing Debian's redis-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "[redis] no Redis at $host:$port and no redis-server installed." >&2
    echo "        Install it (sudo apt-get install redis-server / brew install redis) or run one: docker run -p 6379:6379 redis:7" >&2
    exit 1
  fi
fi
mkdir -p "$run_dir"
log="$run_dir/redis-$port.log"
pidfile="$run_dir/redis-$port.pid"
echo "[redis] starting redis-server on $host:$port (log: $log)"
redis-server --daemonize yes --bind "$host" --port "$port" --save "" --appendonly no \
  --dir "$run_dir" --logfile "$log" --pidfile "$pidfile"
for _ in $(seq 1 50); do
  answers && { echo "[redis] answering at $host:$port (pid $(cat "$pidfile" 2>/dev/null || echo '?'), started by us)"; exit 0; }
  sleep 0.1
done
echo "[redis] redis-server did not answer on $host:$port; see $log" >&2
exit 1

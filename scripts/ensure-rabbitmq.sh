#!/usr/bin/env bash
# Make sure a RabbitMQ answers at $RABBITMQ_HOST:$RABBITMQ_PORT (default 127.0.0.1:5672, guest/guest):
# start rabbitmq-server (on its configured port, 5672 by default) if none does, installing Debian's
# rabbitmq-server first if it is missing.
# The tests give each scenario a private virtual host with rabbitmqctl.
set -euo pipefail
cd "$(dirname "$0")/.."
host="${RABBITMQ_HOST:-127.0.0.1}"
port="${RABBITMQ_PORT:-5672}"
answers() {
  # an AMQP login, not just an open port (the broker accepts connections before it is ready)
  .venv/bin/python - "$host" "$port" <<'PY' >/dev/null 2>&1
import sys
from kombu import Connection
with Connection(f"amqp://guest:guest@{sys.argv[1]}:{sys.argv[2]}//", connect_timeout=2) as conn:
    conn.ensure_connection(max_retries=1)
PY
}
if answers; then
  echo "[rabbitmq] answering at $host:$port"
  exit 0
fi
if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    echo "[rabbitmq] installing Debian's rabbitmq-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  else
    echo "[rabbitmq] no RabbitMQ at $host:$port and no rabbitmq-server installed." >&2
    echo "           Install it (sudo apt-get install rabbitmq-server / brew install rabbitmq) or run one:" >&2
    echo "           docker run -p 5672:5672 rabbitmq:3" >&2
    exit 1
  fi
fi
export PATH="$PATH:/usr/sbin"
echo "[rabbitmq] starting rabbitmq-server on $host:$port"
# (the package's service may be stopped; as root, rabbitmq-server drops to the rabbitmq user itself)
rabbitmq-server -detached >"/tmp/tracejudge-rabbitmq-$port.log" 2>&1 || true
deadline=$((SECONDS + 60))
while [ "$SECONDS" -lt "$deadline" ]; do
  answers && { echo "[rabbitmq] answering at $host:$port"; exit 0; }
  sleep 1
done
echo "[rabbitmq] rabbitmq-server did not answer on $host:$port within 60 s; see /tmp/tracejudge-rabbitmq-$port.log and /var/log/rabbitmq/" >&2
exit 1

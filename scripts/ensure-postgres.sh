#!/usr/bin/env bash
# Make sure a PostgreSQL answers at $POSTGRES_HOST:$POSTGRES_PORT (default 127.0.0.1:5432) and lets user
# `postgres` in without a password check (trust), as the redaction tests need (they put a sentinel password
# in the tracking URI). If none answers: install Debian's postgresql if missing, and start a private cluster
# (trust auth) under $TRACEJUDGE_RUN_DIR/postgres, logging to $TRACEJUDGE_RUN_DIR/postgres.log.
# Prints the data directory of a cluster it started on the last line as "[postgres] started <dir>".
set -euo pipefail
host="${POSTGRES_HOST:-127.0.0.1}"
port="${POSTGRES_PORT:-5432}"
run_dir="${TRACEJUDGE_RUN_DIR:-$PWD/.tracejudge/run}"
answers() { pg_isready -q -h "$host" -p "$port" >/dev/null 2>&1; }
if command -v pg_isready >/dev/null 2>&1 && answers; then
  echo "[postgres] answering at $host:$port"
  exit 0
fi
bin=""
for dir in /usr/lib/postgresql/*/bin; do [ -x "$dir/initdb" ] && bin="$dir"; done
if [ -z "$bin" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    echo "[postgres] installing Debian's postgresql"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    for dir in /usr/lib/postgresql/*/bin; do [ -x "$dir/initdb" ] && bin="$dir"; done
  fi
fi
if [ -z "$bin" ]; then
  echo "[postgres] no PostgreSQL at $host:$port and none installed." >&2
  echo "           Install it (sudo apt-get install postgresql) or run one: docker run -e POSTGRES_HOST_AUTH_METHOD=trust -p 5432:5432 postgres:16" >&2
  exit 1
fi
data="$run_dir/postgres"
mkdir -p "$run_dir"
as_owner=()
if [ "$(id -u)" = "0" ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  mkdir -p "$data" && chown postgres "$data" && chmod 700 "$data"
  touch "$run_dir/postgres.log" && chown postgres "$run_dir/postgres.log"
  as_owner=(runuser -u postgres --)
fi
if [ ! -f "$data/PG_VERSION" ]; then
  "${as_owner[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
fi
echo "[postgres] starting a private cluster in $data on $host:$port"
"${as_owner[@]}" "$bin/pg_ctl" -D "$data" -l "$run_dir/postgres.log" -w \
  -o "-h $host -p $port -k /tmp" start >/dev/null
for _ in $(seq 1 50); do
  answers && { echo "[postgres] started $data"; exit 0; }
  sleep 0.2
done
echo "[postgres] PostgreSQL did not answer on $host:$port; see $run_dir/postgres.log" >&2
exit 1

#!/usr/bin/env bash
# The tests: set up .venv if needed, make sure Redis and RabbitMQ answer, run pytest (arguments pass through).
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
scripts/ensure-redis.sh
scripts/ensure-rabbitmq.sh
scripts/ensure-chromium.sh   # the dashboard's browser test (skipped with a reason if none can be had)
exec .venv/bin/python -m pytest "$@"

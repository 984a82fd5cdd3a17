#!/usr/bin/env bash
# The tests: set up .venv if needed, make sure Redis, RabbitMQ and PostgreSQL answer, run pytest (arguments pass through).
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
scripts/ensure-redis.sh
scripts/ensure-rabbitmq.sh
scripts/ensure-postgres.sh   # the redaction test's MLflow store (starts a private trust-auth cluster if none answers)
scripts/ensure-chromium.sh   # the dashboard's browser test (skipped with a reason if none can be had)
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# The demo: set up .venv if needed, then judge a sample workflow trace end to end.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
exec .venv/bin/tracejudge demo "$@"

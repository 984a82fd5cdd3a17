#!/usr/bin/env bash
# Make sure Prometheus and promtool are available for the operations tests (`promtool check rules` over
# deploy/prometheus/alerts.yml, a real scrape of a worker): Debian's `prometheus` package (2.42), installed
# with apt-get when missing and we may (root). Never fails the test run: without it those tests skip and say why.
set -uo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  echo "[prometheus] found $(command -v prometheus)"
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "[prometheus] installing Debian's prometheus (for the operations tests)"
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends prometheus >/dev/null); then
    echo "[prometheus] installed $(command -v prometheus)"
    exit 0
  fi
  echo "[prometheus] could not install prometheus; the Prometheus tests will be skipped" >&2
  exit 0
fi
echo "[prometheus] no prometheus/promtool and no way to install them here (needs root and apt-get);" >&2
echo "             the Prometheus tests will be skipped. Install them: sudo apt-get install prometheus" >&2
exit 0

#!/usr/bin/env bash
# Make sure a headless Chromium is available for the dashboard's browser test: Debian's `chromium`,
# installed with apt-get when missing and we may (root). Never fails the test run: without a browser
# the browser test skips and says why.
set -uo pipefail
for name in chromium chromium-browser google-chrome; do
  if command -v "$name" >/dev/null 2>&1; then
    echo "[chromium] found $(command -v "$name")"
    exit 0
  fi
done
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "[chromium] installing Debian's chromium (for the dashboard's browser test)"
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null); then
    echo "[chromium] installed $(command -v chromium)"
    exit 0
  fi
  echo "[chromium] could not install chromium; the dashboard's browser test will be skipped" >&2
  exit 0
fi
echo "[chromium] no chromium and no way to install it here (needs root and apt-get);" >&2
echo "           the dashboard's browser test will be skipped. Install it: sudo apt-get install chromium" >&2
exit 0

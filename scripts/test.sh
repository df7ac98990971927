#!/usr/bin/env bash
# Install fedaudit with its test dependencies (every extra) in .venv and run the whole test suite.
# System packages: espeak-ng (demo corpus synthesis) and Chromium with its driver (the HTML report
# is checked in a real headless browser).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e '.[dev]'
export FLWR_TELEMETRY_ENABLED=0 RAY_USAGE_STATS_ENABLED=0
.venv/bin/python -m pytest -n 2 -q "$@"

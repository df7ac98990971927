#!/usr/bin/env bash
# Install fedaudit with its test dependencies in .venv and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v espeak-ng >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq espeak-ng >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e '.[dev]'
.venv/bin/python -m pytest -n 2 -q "$@"

#!/usr/bin/env bash
# Install fedaudit in .venv and audit the default demo grid on the embedded demo corpora: every
# setting (FedSGD, FedAvg, UDP, DP-SGD, LDP, pruning, SEFL, dropout) recorded, shadow-trained and
# attacked, then the leakage report written. Resumes where it stopped if run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e .
OUT="${1:-audit-results}"
.venv/bin/fedaudit audit --out "$OUT"
.venv/bin/fedaudit report "$OUT" --out "$OUT/report" --force

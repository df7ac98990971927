#!/usr/bin/env bash
# Install fedaudit in .venv and record a FedSGD run on the embedded demo corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e .
.venv/bin/fedaudit record --corpus demo-private --algorithm fedsgd --rounds 200 --seed 0 \
    --out recorded_updates/demo-private_fedsgd_s0.h5 --force
.venv/bin/fedaudit inspect recorded_updates/demo-private_fedsgd_s0.h5

#!/usr/bin/env bash
# Install fedaudit in .venv and audit a FedSGD run on the embedded demo corpora:
# record the target run, re-run its setup on the shadow corpus, attack, and show where the leakage sits.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e .
OUT=recorded_updates/demo
mkdir -p "$OUT"
.venv/bin/fedaudit record --corpus demo-private --algorithm fedsgd --rounds 200 --seed 0 \
    --out "$OUT/target.h5" --force
.venv/bin/fedaudit inspect "$OUT/target.h5"
.venv/bin/fedaudit shadow --like "$OUT/target.h5" --corpus demo-shadow --runs 5 --out-dir "$OUT/shadow" --force
.venv/bin/fedaudit attack "$OUT/target.h5" --attack stats --shadow "$OUT/shadow" --n-updates 1,5,10,all \
    --json "$OUT/attack_stats.json"
.venv/bin/fedaudit leakage "$OUT/target.h5" --shadow "$OUT/shadow"
.venv/bin/fedaudit attack "$OUT/target.h5" --attack inversion --public-corpus demo-shadow \
    --json "$OUT/attack_inversion.json"

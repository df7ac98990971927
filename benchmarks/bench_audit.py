"""Wall time of an audit grid, and the scale-out of the Ray executor: 2 workers against 1.

Each arm runs the same grid into a fresh results folder (nothing cached); the arms alternate
over ``--repeats`` rounds so machine noise hits them alike, and the ratio is taken per round.

    .venv/bin/python benchmarks/bench_audit.py --config examples/audit-quick.toml --repeats 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from fedaudit.audit.grid import load_audit_config, run_audit

ARMS = {"ray, 1 worker": ("ray", 1), "ray, 2 workers": ("ray", 2), "local, 2 workers": ("local", 2)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", type=Path, default=Path("examples/audit-quick.toml"))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    grid = load_audit_config(args.config)
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for r in range(args.repeats):
        order = list(ARMS) if r % 2 == 0 else list(reversed(ARMS))
        for arm in order:
            executor, jobs = ARMS[arm]
            out = Path(tempfile.mkdtemp(prefix="bench_audit_"))
            try:
                t0 = time.perf_counter()
                run_audit(grid, out, executor=executor, jobs=jobs)
                times[arm].append(time.perf_counter() - t0)
            finally:
                shutil.rmtree(out, ignore_errors=True)
            print(arm, f"{times[arm][-1]:.1f} s", flush=True)
    ratios = [a / b for a, b in zip(times["ray, 1 worker"], times["ray, 2 workers"], strict=True)]
    summary = {arm: statistics.median(v) for arm, v in times.items()}
    summary["speed-up of ray 2 workers over 1"] = statistics.median(ratios)
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"times": times, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()

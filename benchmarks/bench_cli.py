"""Start-up time of the command line: --help, --version and a bad argument, against importing torch.

Each command runs ``--repeats`` times, interleaved so machine noise hits every case alike; the
median wall time is printed, with its ratio to a bare ``python -c "import torch"`` measured in the
same loop (what every command paid before imports were made lazy).

    .venv/bin/python benchmarks/bench_cli.py --repeats 15
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent / "fedaudit"
CASES = {
    "fedaudit --help": [str(BIN), "--help"],
    "fedaudit --version": [str(BIN), "--version"],
    "fedaudit record --algorithm fedprox (bad argument)": [str(BIN), "record", "--algorithm", "fedprox"],
    "fedaudit attack missing.h5 (bad path)": [str(BIN), "attack", "missing.h5"],
    "python -c 'import torch' (reference)": [sys.executable, "-c", "import torch"],
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(argv)
    times: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(args.repeats):
        for name, cmd in CASES.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            times[name].append(time.perf_counter() - t0)
    ref = statistics.median(times["python -c 'import torch' (reference)"])
    print("| command | median s | ratio to importing torch |")
    print("|---|---|---|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.2f} | {med / ref:.2f} |")


if __name__ == "__main__":
    main()

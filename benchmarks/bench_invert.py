"""Reconstruction from undefended and defended demo recordings, side by side: what each defense leaves recoverable.

Records (with ``fedaudit record``, commands printed) FedSGD runs of ``demo-private`` without a
defense and under UDP and LDP at three epsilons, pruning at three levels and SEFL (the key
holder's view), plus a one-sample-batch run, a whole-training-set batch and FedAvg runs; then
inverts each with the ``analytic`` and ``labels`` methods (``invert_recording``, what ``fedaudit
invert`` runs) and prints every figure with its 95% interval and chance level, the time each
inversion took, and the ratios the LDP-FL publication's "ten times more resilient" claim is
read against (reconstruction error and identification rate, undefended over LDP).

Usage::

    python benchmarks/bench_invert.py --dir /tmp/invbench [--rounds 40] [--updates-per-client 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

RECORD = ["fedaudit", "record", "--corpus", "demo-private", "--client-fraction", "0.1", "--seed", "0"]

#: name -> extra options of `fedaudit record`
SETTINGS: dict[str, list[str]] = {
    "none": [],
    "udp-eps1000": ["--defense", "udp", "--target-epsilon", "1000", "--clip", "1.0"],
    "udp-eps100": ["--defense", "udp", "--target-epsilon", "100", "--clip", "1.0"],
    "udp-eps10": ["--defense", "udp", "--target-epsilon", "10", "--clip", "1.0"],
    "ldp-eps100000": ["--defense", "ldp", "--ldp-epsilon", "100000", "--clip", "1.0"],
    "ldp-eps10000": ["--defense", "ldp", "--ldp-epsilon", "10000", "--clip", "1.0"],
    "ldp-eps1000": ["--defense", "ldp", "--ldp-epsilon", "1000", "--clip", "1.0"],
    "ldp-eps100": ["--defense", "ldp", "--ldp-epsilon", "100", "--clip", "1.0"],
    "ldp-eps10": ["--defense", "ldp", "--ldp-epsilon", "10", "--clip", "1.0"],
    "prune50": ["--defense", "prune", "--prune-percent", "50"],
    "prune80": ["--defense", "prune", "--prune-percent", "80"],
    "prune95": ["--defense", "prune", "--prune-percent", "95"],
    "sefl80": ["--defense", "sefl", "--prune-percent", "80", "--key-bits", "1024", "--encrypted-rounds", "1"],
    "batch1": ["--batch-size", "1", "--lr", "0.01"],
    "fullbatch": ["--batch-size", "64"],
    "fedavg-sgd": ["--algorithm", "fedavg", "--optimizer", "sgd", "--lr", "0.05"],
    "fedavg-adam": ["--algorithm", "fedavg"],
}
METHODS = ("analytic", "labels")


def _fmt(m: dict | None) -> str:
    if m is None or m.get("value") is None:
        return "-"
    pct = m.get("unit") == "fraction"
    f = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.3f}")
    lo, hi, ch = m.get("ci_low"), m.get("ci_high"), m.get("chance")
    ci = f" ({f(lo)}-{f(hi)})" if lo is not None and hi is not None else ""
    return f"{f(m['value'])}{ci}, chance {f(ch) if ch is not None else '-'}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, required=True, help="folder of the recordings (made when missing)")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--updates-per-client", type=int, default=2)
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    from fedaudit.audit.invert import invert_recording

    args.dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    print(f"# {time.strftime('%Y-%m-%d')}, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("# " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    for name in args.only or list(SETTINGS):
        path = args.dir / f"{name}.h5"
        command = [*RECORD, "--rounds", str(args.rounds), "--out", str(path), *SETTINGS[name]]
        print("$ " + " ".join(shlex.quote(a) for a in command), flush=True)
        if not path.is_file():
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        rows[name] = {"command": command}
        for method in METHODS:
            t0 = time.perf_counter()
            result = invert_recording(path, method=method, max_updates_per_client=args.updates_per_client, seed=0,
                                      out=args.dir / f"{name}.invert-{method}.h5", force=True)
            wall = time.perf_counter() - t0
            rows[name][method] = {**result.summary(), "wall_seconds": wall}
            print(f"  {method}: {result.n_updates} updates of {result.n_clients} clients, reconstruct "
                  f"{result.reconstruct_seconds:.1f} s, total {wall:.1f} s", flush=True)
            for m in result.metrics:
                print(f"    {m.name}: {_fmt(m.to_dict())}", flush=True)
    print()
    print("| setting | cosine (95% CI), chance | NMSE | share > 0.99 | identification | gender | label error | "
          "analytic s | labels s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        a = {m["name"]: m for m in row["analytic"]["metrics"]}
        lab = {m["name"]: m for m in row["labels"]["metrics"]}
        label = lab.get("labels_mae") or lab.get("labels_mae_proportions")
        print(f"| {name} | {_fmt(a.get('cosine'))} | {_fmt(a.get('nmse'))} | {_fmt(a.get('recovered'))} | "
              f"{_fmt(a.get('identification'))} | {_fmt(a.get('gender'))} | {_fmt(label)} | "
              f"{row['analytic']['reconstruct_seconds']:.1f} | {row['labels']['reconstruct_seconds']:.2f} |")
    if "none" in rows:
        base = {m["name"]: m for m in rows["none"]["analytic"]["metrics"]}
        print("\nLDP-FL's claim (ten times more resilient under LDP): ratios against the undefended run")
        for name in [n for n in rows if n.startswith(("ldp", "udp"))]:
            a = {m["name"]: m for m in rows[name]["analytic"]["metrics"]}
            err = (1 - a["cosine"]["value"]) / max(1 - base["cosine"]["value"], 1e-12)
            nmse = a["nmse"]["value"] / max(base["nmse"]["value"], 1e-12)
            ident = base["identification"]["value"] / a["identification"]["value"] \
                if a["identification"]["value"] else math.inf
            print(f"  {name}: 1 - cosine x{err:.1f}, NMSE x{nmse:.1f}, identification rate undefended / defended "
                  f"x{ident:.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

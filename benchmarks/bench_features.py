"""Benchmark of feature extraction on synthesised demo audio.

Measures files per second of :func:`fedaudit.data.features.extract_features`
with one and two worker processes, cold (no cache) and cached, and prints a
markdown table.

Usage::

    python benchmarks/bench_features.py                      # synthesises 480 files of demo-private
    python benchmarks/bench_features.py --corpus-dir DIR     # a folder with manifest.csv
    python benchmarks/bench_features.py --feature-sets emobase,mfcc,egemaps --files 960
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd
import soundfile as sf

from fedaudit.data.features import extract_features
from fedaudit.data.synth import read_manifest, synthesize_corpus


def _corpus(args: argparse.Namespace, tmp: Path) -> pd.DataFrame:
    if args.corpus_dir is not None:
        table = read_manifest(args.corpus_dir)
    else:
        # 96 files per pair of speakers (12 sentences x 4 emotions each): 480 files = 10 speakers.
        n_speakers = max(2, 2 * round(args.files / 96))
        table = synthesize_corpus("demo-private", tmp / "corpus", seed=0, n_speakers=n_speakers)
    return table.iloc[: args.files].reset_index(drop=True)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool's workers)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def _timed(table: pd.DataFrame, **kwargs: object) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one extraction (CPU time does not depend on other load)."""
    cpu, start = _cpu_seconds(), time.perf_counter()
    extract_features(table, **kwargs)  # type: ignore[arg-type]
    return time.perf_counter() - start, _cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus-dir", type=Path, default=None, help="Folder with manifest.csv [default: synth]"
    )
    parser.add_argument("--files", type=int, default=480, help="Number of files to extract.")
    parser.add_argument("--feature-sets", default="emobase,mfcc", help="Comma-separated names.")
    parser.add_argument("--jobs", default="1,2", help="Comma-separated worker counts.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fedaudit-bench-") as tmp_name:
        tmp = Path(tmp_name)
        table = _corpus(args, tmp)
        seconds = sum(sf.info(p).duration for p in table["path"])
        # Warm the page cache and the parent's extractors so that the first run is not penalised.
        for fs in args.feature_sets.split(","):
            extract_features(table.iloc[:4], feature_set=fs, n_jobs=1)

        rows = []
        for fs in args.feature_sets.split(","):
            for jobs in (int(j) for j in args.jobs.split(",")):
                t = _timed(table, feature_set=fs, n_jobs=jobs)
                rows.append((fs, jobs, "cold, no cache", len(table), t))
            jobs = max(int(j) for j in args.jobs.split(","))
            cache = tmp / f"cache-{fs}"
            t = _timed(table, feature_set=fs, n_jobs=jobs, cache_dir=cache)
            rows.append((fs, jobs, "cold, filling the cache", len(table), t))
            t = _timed(table, feature_set=fs, n_jobs=jobs, cache_dir=cache)
            rows.append((fs, jobs, "cached re-run", len(table), t))

    machine = platform.processor() or platform.machine()
    print(
        f"Date: {dt.date.today().isoformat()}; machine: {machine}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"Audio: {len(table)} files, {seconds / len(table):.2f} s mean duration\n")
    load = os.getloadavg()
    print(f"Load average at the end (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n")
    print("| feature set | n_jobs | run | files | wall s | files/s | CPU ms per file |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for fs, jobs, run, n, (wall, cpu) in rows:
        rate, cpu_ms = n / wall, 1000 * cpu / n
        print(f"| {fs} | {jobs} | {run} | {n} | {wall:.2f} | {rate:.1f} | {cpu_ms:.1f} |")


if __name__ == "__main__":
    main()

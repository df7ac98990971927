"""Benchmarks of the update recorder: run overhead, HDF5 write rate, reader.

Every figure is a *ratio* of two things measured side by side in one process,
interleaved (the order of the two alternates from one repetition to the next)
and repeated; the report gives the median of the per-repetition ratios and
their spread (min..max). Absolute times on a shared machine are noisy; the
ratios are what the targets are about.

1. Recording overhead: the same seeded run with and without the recorder
   (``record_run`` vs ``simulate``), FedSGD and FedAvg.
   Target: recording at most 10% slower (median ratio <= 1.10).
2. HDF5 write rate: the same update bytes through ``UpdateWriter.add`` /
   ``commit_round`` (rounds of 3 updates) vs a plain sequential ``write`` of the
   same bytes, with the same durability (see ``--help``).
   Target: at least 50% of the plain rate.
3. Reader: one layer (fc1) of all updates, of one client and of one round via
   ``UpdateStore`` (contiguous slice reads) vs the same rows with an h5py fancy
   (index-list) read.
4. Checksums: (a) the write of item 2 with and without the chunk checksums
   (the hash replaced by a constant in one arm); (b) opening and reading every
   parameter of every row with ``UpdateStore.open(verify=True)`` vs
   ``verify=False``. Target: verification costs at most 10% of a full-file read
   (median ratio <= 1.10).

Usage::

    .venv/bin/python benchmarks/bench_record.py --quick      # ~1-2 min smoke run
    .venv/bin/python benchmarks/bench_record.py              # full run
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import fedaudit.record.writer as record_writer  # noqa: E402
from fedaudit.audit import record_run  # noqa: E402
from fedaudit.config import FLConfig  # noqa: E402
from fedaudit.models import build_model, parameter_shapes  # noqa: E402
from fedaudit.fl.simulate import simulate  # noqa: E402
from fedaudit.hooks import ClientInfo  # noqa: E402
from fedaudit.record import UpdateStore  # noqa: E402
from fedaudit.record.reader import _runs  # noqa: E402
from fedaudit.types import ClientUpdate  # noqa: E402

MB = 1e6


# -- helpers ----------------------------------------------------------------
def load_table() -> tuple[Any, str]:
    """The shipped demo-private features, or the synthetic stand-in of the tests."""
    try:
        from fedaudit.data.demo import load_demo

        return load_demo("demo-private"), "demo-private (shipped Emo-Base features)"
    except Exception as err:  # noqa: BLE001 - any failure: fall back
        from tests.conftest import make_table

        return make_table(n_speakers=40, per_speaker=48, n_features=988), f"make_table(40, 48, 988) [demo failed: {err}]"


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, result) of one call."""
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    t1, c1 = time.perf_counter(), time.process_time()
    return t1 - t0, c1 - c0, out


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt_spread(s: dict[str, float], digits: int = 3) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}..{s['max']:.{digits}f})"


def machine_info() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError):
        mem_gb = float("nan")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(mem_gb, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "loadavg_start": os.getloadavg(),
    }


# -- 1. recording overhead ---------------------------------------------------
def bench_overhead(
    algorithm: str, rounds: int, repeats: int, table: Any, out_dir: Path, keep: Path | None = None
) -> dict[str, Any]:
    config = FLConfig(algorithm=algorithm, rounds=rounds)
    # Warm-up (torch kernels, allocator, imports, first HDF5 file), not timed.
    warm = FLConfig(algorithm=algorithm, rounds=min(rounds, 3))
    simulate(warm, table)
    record_run(warm, table, out_dir / f"warm_{algorithm}.h5", overwrite=True)
    (out_dir / f"warm_{algorithm}.h5").unlink()

    plain_wall, plain_cpu, rec_wall, rec_cpu, ratios, cpu_ratios = [], [], [], [], [], []
    sizes, same = [], True
    for i in range(repeats):
        path = out_dir / f"overhead_{algorithm}_{i}.h5"

        def run_plain() -> Any:
            return simulate(config, table)

        def run_rec(path: Path = path) -> Any:
            return record_run(config, table, path, overwrite=True)

        order = [("plain", run_plain), ("rec", run_rec)]
        if i % 2:
            order.reverse()
        res: dict[str, tuple[float, float, Any]] = {}
        for name, fn in order:
            res[name] = timed(fn)
        same &= res["plain"][2].summary() == res["rec"][2].summary()
        plain_wall.append(res["plain"][0])
        plain_cpu.append(res["plain"][1])
        rec_wall.append(res["rec"][0])
        rec_cpu.append(res["rec"][1])
        ratios.append(res["rec"][0] / res["plain"][0])
        cpu_ratios.append(res["rec"][1] / res["plain"][1])
        sizes.append(path.stat().st_size)
        if keep is not None and i == repeats - 1:
            shutil.move(path, keep)
        else:
            path.unlink()
        print(f"  [{algorithm} {i + 1}/{repeats}] plain {res['plain'][0]:.2f}s  recorded {res['rec'][0]:.2f}s  "
              f"ratio {ratios[-1]:.3f}", flush=True)
    med = statistics.median(ratios)
    return {
        "algorithm": algorithm, "rounds": rounds, "repeats": repeats,
        "plain_wall_s": spread(plain_wall), "recorded_wall_s": spread(rec_wall),
        "plain_cpu_s": spread(plain_cpu), "recorded_cpu_s": spread(rec_cpu),
        "ratio_wall": spread(ratios), "ratio_cpu": spread(cpu_ratios), "ratios": ratios,
        "file_mb": statistics.median(sizes) / MB, "same_result": same,
        "target": "ratio <= 1.10", "pass": med <= 1.10,
    }


# -- 2. HDF5 write rate ------------------------------------------------------
def model_shapes(n_features: int = 988) -> dict[str, tuple[int, ...]]:
    cfg = FLConfig()
    model = build_model(cfg.model, n_features, hidden=cfg.hidden, dropout=cfg.dropout, n_classes=cfg.n_classes)
    return parameter_shapes(model)


def make_pool(shapes: dict[str, tuple[int, ...]], n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()} for _ in range(n)]


def write_h5(path: Path, shapes: dict[str, tuple[int, ...]], pool: list[dict[str, np.ndarray]],
             n_rounds: int, per_round: int, fsync: bool) -> int:
    n_clients = per_round * 4
    writer = UpdateStore.create(
        path, config={"bench": True}, parameter_shapes=shapes,
        clients=[ClientInfo(client_id=c, corpus="bench", n_train=40, n_val=8,
                            attributes={"gender": "F", "speaker_id": f"s{c}"}) for c in range(n_clients)],
        metric_names=["val_uar", "val_acc", "test_uar", "test_acc", "train_loss", "n_clients"],
        overwrite=True,
    )
    k = 0
    for r in range(n_rounds):
        for j in range(per_round):
            writer.add(ClientUpdate(server_round=r, client_id=(r + j) % n_clients, kind="gradient",
                                    arrays=pool[k % len(pool)], num_samples=20, local_steps=1, lr=0.1))
            k += 1
        writer.commit_round(metrics={"server_round": r, "val_uar": 0.5, "val_acc": 0.5, "test_uar": 0.5,
                                     "test_acc": 0.5, "train_loss": 1.0, "n_clients": per_round})
    payload = writer.bytes_written
    writer.finish({"bench": True})
    if fsync:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return payload


def write_plain(path: Path, pool: list[dict[str, np.ndarray]], n_rounds: int, per_round: int, fsync: bool) -> int:
    payload = 0
    k = 0
    with open(path, "wb") as f:
        for _ in range(n_rounds):
            for _ in range(per_round):
                for arr in pool[k % len(pool)].values():
                    payload += f.write(memoryview(arr).cast("B"))
                k += 1
            f.flush()  # one OS-level flush per round, as commit_round does
        if fsync:
            os.fsync(f.fileno())
    return payload


def bench_write(n_updates: int, per_round: int, repeats: int, out_dir: Path) -> list[dict[str, Any]]:
    shapes = model_shapes()
    pool = make_pool(shapes, 8)
    n_rounds = max(1, n_updates // per_round)
    # Warm-up: one small file of each kind.
    write_h5(out_dir / "warm.h5", shapes, pool, 3, per_round, False)
    write_plain(out_dir / "warm.bin", pool, 3, per_round, False)
    (out_dir / "warm.h5").unlink()
    (out_dir / "warm.bin").unlink()
    results = []
    for fsync in (False, True):
        h5_rate, plain_rate, ratios, h5_t, plain_t = [], [], [], [], []
        payload = 0
        for i in range(repeats):
            h5_path, bin_path = out_dir / f"w_{i}.h5", out_dir / f"w_{i}.bin"
            jobs = [
                ("h5", lambda: write_h5(h5_path, shapes, pool, n_rounds, per_round, fsync)),
                ("plain", lambda: write_plain(bin_path, pool, n_rounds, per_round, fsync)),
            ]
            if i % 2:
                jobs.reverse()
            res = {}
            for name, fn in jobs:
                res[name] = timed(fn)
            assert res["h5"][2] == res["plain"][2], (res["h5"][2], res["plain"][2])
            payload = res["plain"][2]
            h5_t.append(res["h5"][0])
            plain_t.append(res["plain"][0])
            h5_rate.append(payload / MB / res["h5"][0])
            plain_rate.append(payload / MB / res["plain"][0])
            ratios.append(h5_rate[-1] / plain_rate[-1])
            h5_size = h5_path.stat().st_size
            h5_path.unlink()
            bin_path.unlink()
            print(f"  [write fsync={fsync} {i + 1}/{repeats}] h5 {h5_rate[-1]:.0f} MB/s  plain {plain_rate[-1]:.0f} MB/s"
                  f"  ratio {ratios[-1]:.3f}", flush=True)
        med = statistics.median(ratios)
        results.append({
            "durability": "flush per round + fsync at end" if fsync else "flush per round (no fsync)",
            "n_updates": n_rounds * per_round, "per_round": per_round, "payload_mb": payload / MB,
            "h5_file_mb": h5_size / MB, "repeats": repeats,
            "h5_mb_s": spread(h5_rate), "plain_mb_s": spread(plain_rate), "h5_s": spread(h5_t),
            "plain_s": spread(plain_t), "ratio": spread(ratios), "ratios": ratios,
            "target": "ratio >= 0.50", "pass": med >= 0.50,
        })
    return results


# -- 3. reader ---------------------------------------------------------------
def bench_read(path: Path, repeats: int) -> list[dict[str, Any]]:
    store = UpdateStore.open(path)
    try:
        f = store._f  # the same open file: only the selection differs
        ds = {p: f["updates/fc1"][p] for p in ("weight", "bias")}
        counts = np.bincount(store.index["client_id"])
        client = int(np.argmax(counts))
        rnd = store.rounds_completed // 2
        cases = {
            f"all updates ({store.n_updates} rows)": np.arange(store.n_updates),
            f"one client (id {client}, {len(store.client_rows(client))} rows)": store.client_rows(client),
            f"one round (round {rnd}, {len(store.round_rows(rnd))} rows)": store.round_rows(rnd),
        }
        results = []
        for label, rows in cases.items():
            sel: slice | np.ndarray = slice(None) if label.startswith("all") else (
                slice(int(rows[0]), int(rows[-1]) + 1) if label.startswith("one round") else rows)

            def lib(sel: slice | np.ndarray = sel) -> dict[str, np.ndarray]:
                return store.layer("fc1", sel if not isinstance(sel, slice) or sel.start is not None else None)

            def contiguous(rows: np.ndarray = rows) -> dict[str, np.ndarray]:
                # What UpdateStore does, on already-open dataset handles: one slice read per run of rows.
                out = {}
                for p, d in ds.items():
                    buf = np.empty((len(rows), *d.shape[1:]), dtype=d.dtype)
                    for start, stop, dst in _runs(rows):
                        d.read_direct(buf, np.s_[start:stop], np.s_[dst : dst + stop - start])
                    out[p] = buf
                return out

            def fancy(rows: np.ndarray = rows) -> dict[str, np.ndarray]:
                idx = rows.tolist()  # h5py fancy (index-list) selection on axis 0
                return {p: d[idx] for p, d in ds.items()}

            a, b, c = lib(), fancy(), contiguous()  # warm-up + correctness
            assert all(np.array_equal(a[p], b[p]) and np.array_equal(a[p], c[p]) for p in a)
            nbytes = sum(v.nbytes for v in a.values())
            del a, b, c
            lib_t, raw_t, fancy_t, ratios, lib_ratios = [], [], [], [], []
            for i in range(repeats):
                jobs = [("lib", lib), ("raw", contiguous), ("fancy", fancy)]
                if i % 2:
                    jobs.reverse()
                res = {}
                for name, fn in jobs:
                    res[name] = timed(fn)[0]
                lib_t.append(res["lib"])
                raw_t.append(res["raw"])
                fancy_t.append(res["fancy"])
                ratios.append(res["fancy"] / res["raw"])
                lib_ratios.append(res["fancy"] / res["lib"])
            results.append({
                "case": label, "mb": nbytes / MB, "repeats": repeats,
                "library_s": spread(lib_t), "contiguous_s": spread(raw_t), "fancy_s": spread(fancy_t),
                "library_mb_s": nbytes / MB / statistics.median(lib_t),
                "contiguous_mb_s": nbytes / MB / statistics.median(raw_t),
                "fancy_mb_s": nbytes / MB / statistics.median(fancy_t),
                "ratio_fancy_over_contiguous": spread(ratios), "ratios": ratios,
                "ratio_fancy_over_library": spread(lib_ratios),
            })
            print(f"  [read {label}] UpdateStore {statistics.median(lib_t) * 1e3:.1f} ms  "
                  f"contiguous {statistics.median(raw_t) * 1e3:.1f} ms  "
                  f"fancy {statistics.median(fancy_t) * 1e3:.1f} ms  ratio {statistics.median(ratios):.2f}", flush=True)
        return results
    finally:
        store.close()


# -- 4. checksums --------------------------------------------------------------
def bench_write_checksums(n_updates: int, per_round: int, repeats: int, out_dir: Path) -> dict[str, Any]:
    """The same writes with the chunk checksums and with the hash replaced by a constant."""
    shapes = model_shapes()
    pool = make_pool(shapes, 8)
    n_rounds = max(1, n_updates // per_round)
    real = record_writer.digest

    def run(hashing: bool, path: Path) -> int:
        record_writer.digest = real if hashing else (lambda buf: 0)
        try:
            return write_h5(path, shapes, pool, n_rounds, per_round, False)
        finally:
            record_writer.digest = real

    run(True, out_dir / "warm.h5")
    (out_dir / "warm.h5").unlink()
    with_t, without_t, ratios = [], [], []
    for i in range(repeats):
        jobs = [("with", True), ("without", False)]
        if i % 2:
            jobs.reverse()
        res = {}
        for name, hashing in jobs:
            path = out_dir / f"c_{name}.h5"
            res[name] = timed(lambda hashing=hashing, path=path: run(hashing, path))[0]
            path.unlink()
        with_t.append(res["with"])
        without_t.append(res["without"])
        ratios.append(res["with"] / res["without"])
        print(f"  [write checksums {i + 1}/{repeats}] with {res['with']:.3f}s  without {res['without']:.3f}s  "
              f"ratio {ratios[-1]:.3f}", flush=True)
    return {"n_updates": n_rounds * per_round, "repeats": repeats, "with_s": spread(with_t),
            "without_s": spread(without_t), "ratio": spread(ratios), "ratios": ratios}


def evict(path: Path) -> None:
    """Drop this file's pages from the page cache (POSIX_FADV_DONTNEED): the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def bench_verify(path: Path, repeats: int, *, cold: bool = False) -> dict[str, Any]:
    """Open + read every parameter of every row, with and without verification (same file, same process).

    ``cold``: the file's pages are evicted before each arm, so both read from the disk.
    """
    def full_read(verify: bool) -> tuple[float, float]:
        gc.collect()
        if cold:
            evict(path)
        t0 = time.perf_counter()
        store = UpdateStore.open(path, verify=verify)
        t1 = time.perf_counter()
        try:
            for name in store.parameter_names:
                store.param(name)
        finally:
            store.close()
        return time.perf_counter() - t0, t1 - t0

    full_read(True), full_read(False)  # warm page cache
    on_t, off_t, open_on, open_off, ratios = [], [], [], [], []
    for i in range(repeats):
        jobs = [True, False] if i % 2 == 0 else [False, True]
        res = {v: full_read(v) for v in jobs}
        on_t.append(res[True][0])
        off_t.append(res[False][0])
        open_on.append(res[True][1])
        open_off.append(res[False][1])
        ratios.append(res[True][0] / res[False][0])
        print(f"  [verify{' cold' if cold else ''} {i + 1}/{repeats}] verify {res[True][0]:.3f}s  no-verify {res[False][0]:.3f}s  "
              f"ratio {ratios[-1]:.3f}", flush=True)
    med = statistics.median(ratios)
    return {"cache": "cold (file evicted before each arm)" if cold else "warm page cache",
            "file_mb": path.stat().st_size / MB, "repeats": repeats, "verify_s": spread(on_t),
            "no_verify_s": spread(off_t), "open_verify_s": spread(open_on), "open_no_verify_s": spread(open_off),
            "ratio": spread(ratios), "ratios": ratios, "target": "ratio <= 1.10", "pass": med <= 1.10}


# -- report ------------------------------------------------------------------
def markdown(report: dict[str, Any]) -> str:
    out = []
    out.append("### 1. Recording overhead (record_run vs simulate, same seeded run)\n")
    out.append("| algorithm | rounds | pairs | simulate s | record_run s | ratio wall, median (min..max) "
               "| ratio CPU, median (min..max) | file MB | same result | target | verdict |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in report["overhead"]:
        out.append(f"| {r['algorithm']} | {r['rounds']} | {r['repeats']} | {r['plain_wall_s']['median']:.2f} "
                   f"| {r['recorded_wall_s']['median']:.2f} | {fmt_spread(r['ratio_wall'])} "
                   f"| {fmt_spread(r['ratio_cpu'])} | {r['file_mb']:.0f} | {r['same_result']} "
                   f"| <= 1.10 | {'PASS' if r['pass'] else 'FAIL'} |")
    out.append("\n### 2. HDF5 write rate (UpdateWriter vs plain sequential write, same bytes, same disk)\n")
    out.append("| durability (both sides) | updates | payload MB | UpdateWriter MB/s | plain MB/s "
               "| ratio, median (min..max) | target | verdict |")
    out.append("|---|---|---|---|---|---|---|---|")
    for r in report["write"]:
        out.append(f"| {r['durability']} | {r['n_updates']} ({r['per_round']}/round) | {r['payload_mb']:.0f} "
                   f"| {fmt_spread(r['h5_mb_s'], 0)} | {fmt_spread(r['plain_mb_s'], 0)} "
                   f"| {fmt_spread(r['ratio'])} | >= 0.50 | {'PASS' if r['pass'] else 'FAIL'} |")
    out.append("\n### 3. Reader: fc1 (weight + bias), contiguous slice reads vs h5py fancy read of the same rows\n")
    out.append("| selection | MB | UpdateStore.layer ms | contiguous slices ms (open handle) | fancy ms (open handle) "
               "| contiguous MB/s | fancy MB/s | fancy / contiguous time, median (min..max) "
               "| fancy / UpdateStore.layer time, median (min..max) |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in report["read"]:
        out.append(f"| {r['case']} | {r['mb']:.1f} | {r['library_s']['median'] * 1e3:.1f} "
                   f"| {r['contiguous_s']['median'] * 1e3:.1f} "
                   f"| {r['fancy_s']['median'] * 1e3:.1f} | {r['contiguous_mb_s']:.0f} | {r['fancy_mb_s']:.0f} "
                   f"| {fmt_spread(r['ratio_fancy_over_contiguous'], 2)} "
                   f"| {fmt_spread(r['ratio_fancy_over_library'], 2)} |")
    if report.get("checksums"):
        c = report["checksums"]
        out.append("\n### 4. Checksums\n")
        if "write" in c:
            w = c["write"]
            out.append(f"Write of {w['n_updates']} updates with chunk checksums vs the hash replaced by a constant: "
                       f"{w['with_s']['median']:.3f} s vs {w['without_s']['median']:.3f} s, ratio "
                       f"{fmt_spread(w['ratio'])}.\n")
        out.append("| page cache | file MB | open+read, verify s | open+read, no verify s | open, verify s "
                   "| open, no verify s | ratio, median (min..max) | target | verdict |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for key in ("verify", "verify_cold"):
            if key not in c:
                continue
            v = c[key]
            out.append(f"| {v['cache']} | {v['file_mb']:.0f} | {v['verify_s']['median']:.3f} "
                       f"| {v['no_verify_s']['median']:.3f} | {v['open_verify_s']['median']:.3f} "
                       f"| {v['open_no_verify_s']['median']:.3f} | {fmt_spread(v['ratio'])} | <= 1.10 "
                       f"| {'PASS' if v['pass'] else 'FAIL'} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=200, help="FedSGD rounds of the overhead run (default 200)")
    p.add_argument("--fedavg-rounds", type=int, default=None,
                   help="FedAvg rounds of the overhead run (default: --rounds)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repetitions of every pair (default 5)")
    p.add_argument("--write-updates", type=int, default=300,
                   help="updates written per write-rate measurement (default 300, ~345 MB)")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="scratch folder for the files (default: a fresh temp dir, removed at the end)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch intra-op threads (default 1: on a shared 2-core machine, 2 OpenMP threads "
                        "make a run 5-10x slower and its time erratic; 0 keeps torch's default)")
    p.add_argument("--json", type=Path, default=None, help="also write the raw figures to this JSON file")
    p.add_argument("--quick", action="store_true", help="short smoke run (20/5 rounds, 2 repeats, 30 updates)")
    p.add_argument("--skip", nargs="*", default=[], choices=["overhead", "fedavg", "write", "read", "checksums"],
                   help="parts to skip")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.fedavg_rounds, args.repeats, args.write_updates = 20, 5, 2, 30
    if args.fedavg_rounds is None:
        args.fedavg_rounds = args.rounds

    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    own_dir = args.out_dir is None
    out_dir = Path(tempfile.mkdtemp(prefix="bench_record_")) if own_dir else args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.timezone.utc)
    report: dict[str, Any] = {"date": started.isoformat(timespec="seconds"), "machine": machine_info(),
                              "command": " ".join([Path(sys.executable).name, *sys.argv]),
                              "args": {k: str(v) for k, v in vars(args).items()}, "out_dir": str(out_dir),
                              "overhead": [], "write": [], "read": [], "checksums": {}}
    t_start = time.perf_counter()
    try:
        table, table_desc = load_table()
        report["data"] = table_desc
        print(f"# bench_record  {report['date']}  data: {table_desc}  out: {out_dir}", flush=True)
        kept = out_dir / "fedsgd_recording.h5"
        if "overhead" not in args.skip:
            report["overhead"].append(bench_overhead("fedsgd", args.rounds, args.repeats, table, out_dir, keep=kept))
            if "fedavg" not in args.skip:
                report["overhead"].append(bench_overhead("fedavg", args.fedavg_rounds, args.repeats, table, out_dir))
        if "write" not in args.skip:
            report["write"] = bench_write(args.write_updates, 3, args.repeats, out_dir)
        if "read" not in args.skip:
            if not kept.exists():
                record_run(FLConfig(rounds=args.rounds), table, kept, overwrite=True)
            report["read"] = bench_read(kept, max(args.repeats, 5))
        if "checksums" not in args.skip:
            report["checksums"]["write"] = bench_write_checksums(args.write_updates, 3, args.repeats, out_dir)
            if not kept.exists():
                record_run(FLConfig(rounds=args.rounds), table, kept, overwrite=True)
            report["checksums"]["verify"] = bench_verify(kept, max(args.repeats, 5))
            if hasattr(os, "posix_fadvise"):
                report["checksums"]["verify_cold"] = bench_verify(kept, max(args.repeats, 5), cold=True)
        report["machine"]["loadavg_end"] = os.getloadavg()
        report["elapsed_s"] = time.perf_counter() - t_start
        md = markdown(report)
        m = report["machine"]
        print()
        print(f"date {report['date']}; {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, Linux {m['kernel']}; "
              f"Python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads), numpy {m['numpy']}, "
              f"h5py {m['h5py']} / HDF5 {m['hdf5']}; load average {m['loadavg_start'][0]:.1f} -> "
              f"{m['loadavg_end'][0]:.1f}; elapsed {report['elapsed_s']:.0f} s")
        print()
        print(md)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
    finally:
        if own_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

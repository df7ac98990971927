"""Wall time and SER utility of the registry's models in a 200-round FedAvg run on the demo corpus.

Each model is run with the simulator's defaults (FedAvg, Adam, lr 0.0005, batch 20,
10% of the 32 clients per round, global normalisation, fold 0, seed 0) on
``demo-private``: the MLP on the Emo-Base features (988 per utterance, as in Feng
et al. 2022), the DNN, CNN and LSTM on ``mfcc-frames`` (13 MFCCs per 20 ms frame,
``--frames`` per utterance, default 300), each with its default architecture
(``fedaudit.config.DEFAULT_ARCHITECTURES``).

Timing: the machine is shared, so the target is a ratio measured side by side in
one process: every repetition runs the four models one after the other, in an
order that rotates from one repetition to the next, and each model's time is
divided by the MLP's time of the same repetition. The report gives the median of
the per-repetition ratios and their min..max. Target: the LSTM within 10x the
MLP's wall time (torch pinned to one intra-op thread, the simulator's default;
the machine has 2 cores).

Utility: UAR and macro F1 on the 8 held-out test speakers at the best round (by
validation UAR), with a 95% interval from 2000 bootstrap resamples of the test
speakers (utterances of one speaker are not independent). Chance is 0.25 UAR
(4 balanced emotions). A run is deterministic given its seed; repetitions check it.

Usage::

    .venv/bin/python benchmarks/bench_models.py                    # 3 repetitions, ~15 min
    .venv/bin/python benchmarks/bench_models.py --repeats 1 --rounds 50 --models mlp lstm
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedaudit.config import FLConfig
from fedaudit.data.demo import load_demo
from fedaudit.data.normalize import normalize_features
from fedaudit.fl.simulate import build_run_model, simulate
from fedaudit.metrics import macro_f1, uar
from fedaudit.types import EMOTIONS

MODELS = ("mlp", "lstm", "cnn", "dnn")


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _tables(frames: int) -> dict[str, Any]:
    return {"utterance": load_demo("demo-private"),
            "frames": load_demo("demo-private", feature_set="mfcc-frames", n_frames=frames)}


def _config(model: str, args: argparse.Namespace) -> FLConfig:
    return FLConfig(algorithm="fedavg", rounds=args.rounds, model=model, seed=args.seed, lr=args.lr)


def _bootstrap(result: Any, config: FLConfig, table: Any, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Best-round test predictions, and UAR / macro F1 with a speaker bootstrap 95% interval."""
    train_mask = np.zeros(len(table), dtype=bool)
    train_mask[result.split.train_mask_rows] = True
    normed = normalize_features(table, method=config.normalization, train_mask=train_mask)
    model = build_run_model(config, normed)
    with torch.no_grad():
        named = {".".join(n.split(".")[-2:]): p for n, p in model.named_parameters()}
        for name, p in named.items():
            p.copy_(torch.from_numpy(result.best_weights[name]))
    model.eval()
    rows = result.split.test_rows
    label = {e: i for i, e in enumerate(EMOTIONS)}
    truth = np.array([label[e] for e in normed.emotion[rows]])
    with torch.no_grad():
        pred = np.concatenate([model(torch.from_numpy(normed.x[rows[i : i + 128]])).argmax(1).numpy()
                               for i in range(0, len(rows), 128)])
    speakers = normed.speaker_id[rows]
    groups = [np.flatnonzero(speakers == s) for s in np.unique(speakers)]
    rng = np.random.default_rng(seed)
    uars, f1s = [], []
    for _ in range(n_boot):
        idx = np.concatenate([groups[k] for k in rng.integers(0, len(groups), len(groups))])
        uars.append(uar(truth[idx], pred[idx]))
        f1s.append(macro_f1(truth[idx], pred[idx]))
    return {
        "uar": uar(truth, pred), "uar_ci95": [float(np.percentile(uars, 2.5)), float(np.percentile(uars, 97.5))],
        "f1": macro_f1(truth, pred), "f1_ci95": [float(np.percentile(f1s, 2.5)), float(np.percentile(f1s, 97.5))],
        "test_speakers": len(groups), "test_utterances": int(len(rows)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--lr", type=float, default=None, help="client lr (default: FedAvg 0.0005)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None, help="write the report section here")
    args = parser.parse_args(argv)
    models = ["mlp", *[m for m in args.models if m != "mlp"]]
    command = "python benchmarks/bench_models.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"$ {command}")
    print(f"date {dt.date.today()}  host {platform.node()}  cpus {torch.get_num_threads()}  load {_load()}")

    tables = _tables(args.frames)
    # warm-up: first-call costs (imports, kernels) out of the timings
    for model in models:
        table = tables["frames" if model != "mlp" else "utterance"]
        simulate(FLConfig(algorithm="fedavg", rounds=1, model=model, seed=args.seed), table,
                 num_threads=args.torch_threads)

    times: dict[str, list[float]] = {m: [] for m in models}
    results: dict[str, Any] = {}
    loads = [_load()]
    for rep in range(args.repeats):
        order = models[rep % len(models):] + models[: rep % len(models)]
        for model in order:
            table = tables["frames" if model != "mlp" else "utterance"]
            config = _config(model, args)
            start = time.perf_counter()
            result = simulate(config, table, num_threads=args.torch_threads)
            elapsed = time.perf_counter() - start
            times[model].append(elapsed)
            summary = result.summary()
            if model in results:
                same = results[model]["summary"]["test_uar"] == summary["test_uar"]
                results[model]["deterministic"] = results[model].get("deterministic", True) and same
            else:
                results[model] = {"summary": summary, "config": config.to_dict(),
                                  "params": int(sum(np.prod(w.shape) for w in result.final_weights.values())),
                                  "utility": _bootstrap(result, config, table)}
            print(f"rep {rep + 1}/{args.repeats} {model:5s} {elapsed:7.1f} s  best round {summary['best_round']:3d}  "
                  f"test UAR {summary['test_uar']:.3f}  F1 {summary['test_f1']:.3f}  load {_load()}", flush=True)
        loads.append(_load())

    ratios = {m: [t / b for t, b in zip(times[m], times["mlp"], strict=True)] for m in models}
    lines = [
        "## Frame-level models (`bench_models.py`)",
        "",
        f"Command: `{command}`; date {dt.date.today()}; {platform.machine()}, torch {torch.__version__}, "
        f"{args.torch_threads} intra-op thread; machine shared with other work, load average "
        f"{loads[0]} at the start, {loads[-1]} at the end.",
        "",
        f"FedAvg, {args.rounds} rounds, defaults of `FLConfig` (Adam, lr {_config('mlp', args).client_lr}, batch 20, "
        f"3 of 32 clients per round, fold 0, seed {args.seed}) on `demo-private`; mlp on Emo-Base (988), "
        f"the others on `mfcc-frames` ({args.frames} frames x 13). {args.repeats} repetitions, order rotating; "
        "ratio = model time / MLP time of the same repetition (median, min..max).",
        "",
        "| model | architecture | parameters | wall time (s, median) | ratio to MLP | target |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m in models:
        cfg = results[m]["config"]
        r = ratios[m]
        target = "<= 10x" if m == "lstm" else ""
        verdict = "" if not target else (" (met)" if statistics.median(r) <= 10 else " (missed)")
        lines.append(f"| {m} | {','.join(map(str, cfg['hidden']))} | {results[m]['params']:,} | "
                     f"{statistics.median(times[m]):.1f} | {statistics.median(r):.2f} ({min(r):.2f}..{max(r):.2f}) | "
                     f"{target}{verdict} |")
    lines += [
        "",
        f"SER utility at the best round (validation UAR), test fold (8 speakers, 384 utterances); 95% interval "
        "from 2000 bootstrap resamples of the test speakers; chance 0.25.",
        "",
        "| model | best round | test UAR | 95% interval | test macro F1 | 95% interval | deterministic |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in models:
        u, s = results[m]["utility"], results[m]["summary"]
        det = results[m].get("deterministic", "n/a (1 run)")
        lines.append(f"| {m} | {s['best_round']} | {u['uar']:.3f} | {u['uar_ci95'][0]:.3f}..{u['uar_ci95'][1]:.3f} | "
                     f"{u['f1']:.3f} | {u['f1_ci95'][0]:.3f}..{u['f1_ci95'][1]:.3f} | {det} |")
    report = "\n".join(lines) + "\n"
    print()
    print(report)
    if args.markdown is not None:
        args.markdown.write_text(report)
    if args.json is not None:
        args.json.write_text(json.dumps({"times": times, "ratios": ratios, "results": results, "loads": loads},
                                        indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Cost of the stats attack on updates of every client model: fit and score time per model.

Records, for each model (``mlp`` on Emo-Base; ``dnn``, ``cnn``, ``lstm`` on ``mfcc-frames``), a
target run on ``demo-private`` and ``--shadow-runs`` shadow runs on ``demo-shadow`` (FedSGD,
``--rounds`` rounds, the models' default architectures), then times the stats attack's fit on
the shadow runs and its scoring of every target update, ``--repeats`` times. The models are
timed side by side in one process, their order alternating from one repetition to the next;
the report gives medians, the spread (min..max), and each model's fit and score time as a ratio
to the MLP's in the same repetition (median of the per-repetition ratios). One untimed fit comes
first, so that imports are not counted. It also gives each
layer's number of update statistics and the single-update ASR per layer (one fit, seed 0).

Usage::

    python benchmarks/bench_attacks_models.py --rounds 200 --shadow-runs 3 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from fedaudit.attacks import AttackerKnowledge, StatsAttack, layer_parameters, update_statistics
from fedaudit.audit import record_run, run_shadow
from fedaudit.config import FLConfig
from fedaudit.data.demo import load_demo
from fedaudit.metrics import attack_success, row_probabilities
from fedaudit.record import UpdateStore

FEATURE_SET = {"mlp": "emobase", "dnn": "mfcc-frames", "cnn": "mfcc-frames", "lstm": "mfcc-frames"}


def _record(model: str, rounds: int, shadow_runs: int, out: Path, *, reuse: bool) -> tuple[Path, list[Path], float]:
    target = out / f"{model}_target.h5"
    shadows = [out / f"{model}_shadow_run{k}.h5" for k in range(shadow_runs)]
    if reuse and target.is_file() and all(p.is_file() for p in shadows):
        with UpdateStore.open(target) as store:
            if int(store.config.get("rounds", -1)) == rounds:
                return target, shadows, float(store.result.get("test_uar", float("nan")))
    fs = FEATURE_SET[model]
    private, shadow = load_demo("demo-private", feature_set=fs), load_demo("demo-shadow", feature_set=fs)
    cfg = FLConfig(model=model, rounds=rounds, seed=0)
    result = record_run(cfg, private, target, overwrite=True)
    paths = run_shadow(target, shadow, out_dir=out, runs=shadow_runs, seed=1000, name=f"{model}_shadow",
                       overwrite=True)
    return target, paths, float(result.best.test_uar)


def _time_once(target: Path, shadows: list[Path]) -> tuple[float, float, StatsAttack]:
    stores = [UpdateStore.open(p) for p in shadows]
    try:
        t0 = time.perf_counter()
        attack = StatsAttack(seed=0).fit(AttackerKnowledge(shadows=stores))
        fit = time.perf_counter() - t0
    finally:
        for s in stores:
            s.close()
    with UpdateStore.open(target) as store:
        t0 = time.perf_counter()
        row_probabilities(attack.predict_proba, store, attack.required_parameters())
        score = time.perf_counter() - t0
    return fit, score, attack


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mlp,dnn,cnn,lstm", help="comma-separated model registry keys")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--shadow-runs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--torch-threads", type=int, default=1, help="threads while recording (1 on a shared machine)")
    p.add_argument("--out-dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--reuse", action="store_true", help="reuse recordings of the same rounds left in --out-dir")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(FEATURE_SET))
    if unknown:
        p.error(f"unknown models {unknown}; choose from {sorted(FEATURE_SET)}")
    out = args.out_dir or Path(tempfile.mkdtemp(prefix="bench_attacks_models_"))
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/bench_attacks_models.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(command, flush=True)
    load_start = os.getloadavg()[0]

    torch.set_num_threads(args.torch_threads)
    runs: dict[str, dict] = {}
    for model in models:
        t0 = time.perf_counter()
        target, shadows, uar = _record(model, args.rounds, args.shadow_runs, out, reuse=args.reuse)
        with UpdateStore.open(target) as store:
            n_updates = store.n_updates
            shapes = {n: store.shape(n) for n in store.parameter_names}
            layers = store.layers
        widths = {}
        for layer in layers:
            own = layer_parameters(list(shapes), layer)
            fake = {n[len(layer) + 1 :]: np.zeros((1, *shapes[n]), np.float32) for n in own}
            widths[layer] = int(update_statistics(fake).shape[1])
        runs[model] = {"target": target, "shadows": shadows, "ser_test_uar": uar, "n_updates": n_updates,
                       "record_s": time.perf_counter() - t0, "statistics_per_layer": widths,
                       "update_values": int(sum(int(np.prod(s)) for s in shapes.values())), "fit": [], "score": []}
        print(f"recorded {model}: {n_updates} target updates, {runs[model]['record_s']:.0f} s", flush=True)

    _time_once(runs[models[0]]["target"], runs[models[0]]["shadows"])  # warm-up: imports (sklearn) not timed
    asr: dict[str, dict[str, float]] = {}
    for rep in range(args.repeats):
        order = models if rep % 2 == 0 else models[::-1]
        for model in order:
            r = runs[model]
            fit, score, attack = _time_once(r["target"], r["shadows"])
            r["fit"].append(fit)
            r["score"].append(score)
            if model not in asr:
                with UpdateStore.open(r["target"]) as store:
                    proba = attack.layer_proba({n: store.param(n) for n in attack.required_parameters()})
                    asr[model] = {
                        layer: attack_success(attack.restricted([layer]).predict_proba, store,
                                              attack.restricted([layer]).required_parameters(), seed=0,
                                              row_proba=proba[layer]).asr
                        for layer in attack.layers_
                    }
            print(f"repeat {rep + 1}/{args.repeats} {model}: fit {fit:.2f} s, score {score:.2f} s", flush=True)

    report = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                          "load_start": load_start, "load_end": os.getloadavg()[0]},
              "rounds": args.rounds, "shadow_runs": args.shadow_runs, "repeats": args.repeats, "models": {}}
    base = runs.get("mlp")
    print(f"\n| model | target updates | update values | statistics per layer | fit s (median, min..max) | "
          f"score s | score updates/s | fit / mlp | score / mlp | ASR per layer |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in models:
        r = runs[model]
        fit, score = np.array(r["fit"]), np.array(r["score"])
        row = {"ser_test_uar": r["ser_test_uar"], "n_updates": r["n_updates"], "update_values": r["update_values"],
               "statistics_per_layer": r["statistics_per_layer"], "fit_s": r["fit"], "score_s": r["score"],
               "fit_median_s": float(np.median(fit)), "score_median_s": float(np.median(score)),
               "score_updates_per_s": float(r["n_updates"] / np.median(score)), "asr_per_layer": asr[model]}
        ratio = "-", "-"
        if base is not None:
            rf, rs = fit / np.array(base["fit"]), score / np.array(base["score"])
            row["fit_ratio_to_mlp"] = {"median": float(np.median(rf)), "min": float(rf.min()), "max": float(rf.max())}
            row["score_ratio_to_mlp"] = {"median": float(np.median(rs)), "min": float(rs.min()), "max": float(rs.max())}
            ratio = (f"{np.median(rf):.2f} ({rf.min():.2f}..{rf.max():.2f})",
                     f"{np.median(rs):.2f} ({rs.min():.2f}..{rs.max():.2f})")
        report["models"][model] = row
        stats = ", ".join(f"{k} {v}" for k, v in r["statistics_per_layer"].items())
        layers = ", ".join(f"{k} {v:.3f}" for k, v in asr[model].items())
        print(f"| {model} | {r['n_updates']} | {r['update_values']:,} | {stats} | {np.median(fit):.2f} "
              f"({fit.min():.2f}..{fit.max():.2f}) | {np.median(score):.2f} | {r['n_updates'] / np.median(score):.0f} | "
              f"{ratio[0]} | {ratio[1]} | {layers} |")
    print(f"\nload average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

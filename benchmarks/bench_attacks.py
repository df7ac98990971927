"""End-to-end cost and success of the fast attacks on the demo corpora.

Records a target run on ``demo-private``, then times, for each fast attack:
shadow training (``stats`` only: ``--runs`` shadow runs on ``demo-shadow``),
fitting, and scoring, and reports ASR per layer and fused, and the scoring
throughput in updates per second. Targets (issue: attribute inference):
shadow + fit + score with the fastest attack at most 10 minutes on 2 cores;
scoring at least 1,000 updates per second.

Usage::

    python benchmarks/bench_attacks.py --algorithm fedsgd --normalization global --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from fedaudit.attacks import AttackerKnowledge, InversionAttack, StatsAttack
from fedaudit.audit import record_run, run_shadow
from fedaudit.config import FLConfig
from fedaudit.data.demo import load_demo
from fedaudit.metrics import attack_success, row_probabilities
from fedaudit.record import UpdateStore


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algorithm", default="fedsgd", choices=["fedsgd", "fedavg"])
    p.add_argument("--optimizer", default="adam", choices=["sgd", "adam"])
    p.add_argument("--normalization", default="global", choices=["none", "global", "speaker"])
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--runs", type=int, default=5, help="shadow runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    out = args.out_dir or Path(tempfile.mkdtemp(prefix="bench_attacks_"))
    out.mkdir(parents=True, exist_ok=True)
    private, shadow = load_demo("demo-private"), load_demo("demo-shadow")
    cfg = FLConfig(algorithm=args.algorithm, optimizer=args.optimizer, normalization=args.normalization,
                   rounds=args.rounds, seed=args.seed)
    target = out / "target.h5"
    t0 = time.perf_counter()
    result = record_run(cfg, private, target, overwrite=True)
    t_target = time.perf_counter() - t0
    report: dict = {"config": cfg.to_dict(), "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "target_seconds": t_target,
                    "ser_test_uar": result.best.test_uar}
    with threadpool_limits(limits=os.cpu_count()):
        t0 = time.perf_counter()
        paths = run_shadow(target, shadow, out_dir=out, runs=args.runs, seed=1000 + args.seed, overwrite=True)
        t_shadow = time.perf_counter() - t0
        shadows = [UpdateStore.open(x) for x in paths]
        store = UpdateStore.open(target)
        t0 = time.perf_counter()
        stats = StatsAttack(seed=args.seed).fit(AttackerKnowledge(shadows=shadows, target_config=store.config))
        t_fit = time.perf_counter() - t0
        rows = {}
        t0 = time.perf_counter()
        proba = row_probabilities(stats.predict_proba, store, stats.required_parameters())
        t_score = time.perf_counter() - t0
        rows["stats"] = {"shadow_s": t_shadow, "fit_s": t_fit, "score_s": t_score,
                         "updates_per_s": store.n_updates / t_score,
                         "asr": attack_success(stats.predict_proba, store, stats.required_parameters(), seed=0,
                                               row_proba=proba).asr}
        for layer in store.layers:
            sub = stats.restricted([layer])
            rows["stats"][f"asr_{layer}"] = attack_success(sub.predict_proba, store, sub.required_parameters(),
                                                           seed=0).asr
        t0 = time.perf_counter()
        inv = InversionAttack(seed=args.seed).fit(AttackerKnowledge(public=shadow, target_config=store.config))
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        proba = row_probabilities(inv.predict_proba, store, inv.required_parameters())
        t_score = time.perf_counter() - t0
        rows["inversion"] = {"shadow_s": 0.0, "fit_s": t_fit, "score_s": t_score,
                             "updates_per_s": store.n_updates / t_score,
                             "asr": attack_success(inv.predict_proba, store, inv.required_parameters(), seed=0,
                                                   row_proba=proba).asr}
        for n in (5, 10, "all"):
            sub = stats.restricted(["fc1"])
            rows["stats"][f"asr_fc1_n{n}"] = attack_success(sub.predict_proba, store, sub.required_parameters(),
                                                            n_updates=n, seed=0).asr
            rows["inversion"][f"asr_n{n}"] = attack_success(inv.predict_proba, store, inv.required_parameters(),
                                                            n_updates=n, seed=0).asr
    report["attacks"] = rows
    print(f"# bench_attacks {report['date']}  {args.algorithm}/{args.optimizer} normalization={args.normalization} "
          f"rounds={args.rounds} shadow runs={args.runs}; SER test UAR {result.best.test_uar:.3f}")
    print("| attack | shadow FL s | fit s | score s | updates/s | ASR fused | ASR fc1 | fc2 | fc3 | fc1 n=5 | n=10 | n=all | total s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        total = r["shadow_s"] + r["fit_s"] + r["score_s"]
        fc = [r.get(f"asr_{x}", r["asr"] if (name == "inversion" and x == "fc1") else float("nan")) for x in ("fc1", "fc2", "fc3")]
        nn = [r.get(f"asr_fc1_n{n}", r.get(f"asr_n{n}")) for n in (5, 10, "all")]
        print(f"| {name} | {r['shadow_s']:.0f} | {r['fit_s']:.1f} | {r['score_s']:.2f} | {r['updates_per_s']:.0f} | "
              f"{r['asr']:.3f} | " + " | ".join("-" if np.isnan(v) else f"{v:.3f}" for v in fc) + " | "
              + " | ".join(f"{v:.3f}" for v in nn) + f" | {total:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Cost and success of the CNN fusion attack (Feng et al., Interspeech 2022) on this machine.

Usage::

    .venv/bin/python benchmarks/bench_cnn.py --timing-only
    .venv/bin/python benchmarks/bench_cnn.py --shadow-runs 2 --max-train-updates 300 --epochs 4 --patience 2

Part 1 times one training step (forward + backward + Adam) of the first-layer
branch on a batch of 20 updates of shape 256 x 988 (Emo-Base input layer of the
SER MLP), and the scoring throughput of that branch (updates/s, no gradient).

Part 2 records shadow runs on ``demo-shadow`` (FedSGD, 200 rounds, seeds
1000..1000+k-1) and a target run on ``demo-private`` (seed 0), fits the attack under a
CPU budget (``--max-train-updates``, ``--epochs``) and prints the ASR of each
layer alone and fused, with the protocol of :func:`fedaudit.metrics.attack_success`.
Recordings are cached in ``--out`` and reused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fedaudit.attacks import AttackerKnowledge
from fedaudit.attacks.cnn import CNNFusionAttack, LayerBranch
from fedaudit.audit import record_run
from fedaudit.config import FLConfig
from fedaudit.data.demo import load_demo
from fedaudit.metrics import attack_success
from fedaudit.record import UpdateStore


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def time_first_layer(repeats: int = 3, batch: int = 20, shape: tuple[int, int] = (256, 988)) -> dict[str, float]:
    torch.manual_seed(0)
    branch = LayerBranch(shape, shape[0], dropout=0.2)
    opt = torch.optim.Adam(branch.parameters(), lr=1e-4)
    x, b = torch.randn(batch, *shape), torch.randn(batch, shape[0])
    y = torch.randint(0, 2, (batch,))
    branch.train()
    steps = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(branch(x, b), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step warms up allocators and Adam state
            steps.append(time.perf_counter() - start)
    branch.eval()
    xs, bs = torch.randn(64, *shape), torch.randn(64, shape[0])
    with torch.no_grad():
        branch(xs[:8], bs[:8])
        start = time.perf_counter()
        for i in range(0, 64, 32):
            branch(xs[i : i + 32], bs[i : i + 32])
        infer = time.perf_counter() - start
    return {
        "threads": torch.get_num_threads(),
        "train_step_s_median": statistics.median(steps),
        "train_step_s_all": steps,
        "score_updates_per_s": 64 / infer,
        "branch_parameters": sum(p.numel() for p in branch.parameters()),
        "flatten_size": branch.n_flat,
        "loadavg": _load(),
    }


def record(out: Path, k: int) -> tuple[list[Path], Path]:
    out.mkdir(parents=True, exist_ok=True)
    shadows = []
    for seed in range(1000, 1000 + k):  # never the target's seed: a shared initialisation would leak more
        path = out / f"shadow_fedsgd_s{seed}.h5"
        if not path.exists():
            start = time.perf_counter()
            record_run(FLConfig(algorithm="fedsgd", rounds=200, seed=seed), load_demo("demo-shadow"), path)
            print(f"recorded {path.name} in {time.perf_counter() - start:.0f} s", flush=True)
        shadows.append(path)
    target = out / "target_fedsgd_s0.h5"
    if not target.exists():
        record_run(FLConfig(algorithm="fedsgd", rounds=200, seed=0), load_demo("demo-private"), target)
    return shadows, target


def full(args: argparse.Namespace) -> dict[str, object]:
    shadow_paths, target_path = record(Path(args.out), args.shadow_runs)
    shadows = [UpdateStore.open(p) for p in shadow_paths]
    target = UpdateStore.open(target_path)

    def progress(info: dict) -> None:
        print(
            f"  {info['layer']} epoch {info['epoch']}: loss {info['train_loss']:.4f} "
            f"val UAR {info['val_uar']:.3f} (best epoch {info['best_epoch']}) {info['seconds']:.0f} s",
            flush=True,
        )

    attack = CNNFusionAttack(
        max_train_updates=args.max_train_updates, epochs=args.epochs, patience=args.patience, seed=0,
        progress=progress,
    )
    start = time.perf_counter()
    attack.fit(AttackerKnowledge(shadows=shadows, target_config=target.config))
    fit_s = time.perf_counter() - start

    start = time.perf_counter()
    rows = np.arange(target.n_updates)
    per_layer = {layer: np.empty((len(rows), 2)) for layer in attack.layers_}
    for i in range(0, len(rows), 64):
        sel = rows[i : i + 64]
        proba = attack.layer_proba({p: target.param(p, sel) for p in attack.required_parameters()})
        for layer, p in proba.items():
            per_layer[layer][i : i + len(sel)] = p
    score_s = time.perf_counter() - start
    fused = attack.fuse(per_layer)

    results = {}
    for label, proba, sub in [*((layer, per_layer[layer], attack.restricted([layer])) for layer in attack.layers_),
                              ("fused", fused, attack)]:
        res = attack_success(sub.predict_proba, target, sub.required_parameters(), row_proba=proba, seed=0)
        results[label] = {k: getattr(res, k) for k in ("asr", "uar", "auc", "ci_low", "ci_high", "n_clients")}
        print(f"ASR {label:6s} {res.asr:.3f} (95% CI {res.ci_low:.3f}-{res.ci_high:.3f}), UAR {res.uar:.3f}, "
              f"AUC {res.auc:.3f}, {res.n_clients} clients", flush=True)
    return {
        "shadow_runs": args.shadow_runs,
        "shadow_updates": int(sum(s.n_updates for s in shadows)),
        "target_updates": int(target.n_updates),
        "n_train_updates": attack.n_train_updates_,
        "n_val_updates": attack.n_val_updates_,
        "n_train_groups": attack.n_train_groups_,
        "n_val_groups": attack.n_val_groups_,
        "fusion_weights": attack.fusion_weights_,
        "history": attack.history_,
        "fit_s": fit_s,
        "score_s": score_s,
        "results": results,
        "params": attack.get_params(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timing-only", action="store_true")
    parser.add_argument("--shadow-runs", type=int, default=2)
    parser.add_argument("--max-train-updates", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.environ.get("FEDAUDIT_BENCH_DIR", "/tmp/fedaudit-bench-cnn"))
    args = parser.parse_args()

    report: dict[str, object] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
    }
    timing = time_first_layer(repeats=args.repeats)
    report["timing"] = timing
    print(f"first-layer branch: {timing['branch_parameters']:,} parameters, flatten {timing['flatten_size']:,}")
    print(f"train step (20 x 256 x 988, fwd+bwd+Adam, {timing['threads']} threads): "
          f"{timing['train_step_s_median']:.2f} s median of {args.repeats} (load {timing['loadavg']})")
    print(f"scoring: {timing['score_updates_per_s']:.1f} updates/s", flush=True)
    if not args.timing_only:
        report["full"] = full(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_cnn.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {out / 'bench_cnn.json'}")


if __name__ == "__main__":
    main()

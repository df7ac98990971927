"""Analytic reconstruction: throughput and what is left after local training.

Part 1 (throughput): updates per second of ``AnalyticInputs.reconstruct_many`` on
gradients of the 988-dim Emo-Base MLP (256-128, dropout 0.2, He initialisation)
for one-sample and batch-20 FedSGD updates of demo-private clients (global
normalisation), BLAS pinned to ``--threads``; the inversion vector (one matrix
product per update) is timed side by side as the reference. Target: >= 1,000
updates per second on 2 cores.

Part 2 (FedAvg): the same recovery on pseudo-gradients ``(theta_g - theta_l) / (lr U)``
of one client's local training (batch 20): U grows with the client's utterances
(one epoch) and with the local epochs; local SGD and Adam, and local SGD in float64
(the weight difference then carries no float32 rounding) as a control. Reported: the mean
cosine of each recovered vector to its Hungarian-matched true utterance (and to
the nearest one), the share above 0.99 and the share of complete separations.

Usage::

    python benchmarks/bench_reconstruct.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from fedaudit.attacks.reconstruct import ObservedUpdate, ReconstructionContext
from fedaudit.attacks.reconstruct.analytic import AnalyticInputs
from fedaudit.attacks.reconstruct.scores import match_vectors, wilson_interval
from fedaudit.attacks.update_statistics import inversion_vector
from fedaudit.data.demo import load_demo
from fedaudit.data.normalize import normalize_features
from fedaudit.models import MLP, parameter_shapes
from fedaudit.types import EMOTIONS


def _client_rows(table, rng: np.random.Generator, n: int) -> np.ndarray:
    spk = rng.choice(table.speakers)
    rows = np.flatnonzero(table.speaker_id == spk)
    return rng.choice(rows, size=min(n, len(rows)), replace=False)


def _labels(table, rows: np.ndarray) -> np.ndarray:
    return np.array([EMOTIONS.index(e) for e in table.emotion[rows]])


def _grads(model: nn.Module, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    model.zero_grad()
    nn.CrossEntropyLoss()(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    return {n.removeprefix("layers."): p.grad.numpy().copy() for n, p in model.named_parameters()}


def _fedsgd_updates(table, n_updates: int, batch: int, seed: int) -> tuple[list[ObservedUpdate], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = MLP(table.n_features)
    model.train()
    ups, truth = [], []
    for i in range(n_updates):
        rows = _client_rows(table, rng, batch)
        x = table.x[rows].astype(np.float32)
        ups.append(ObservedUpdate(
            row=i, client_id=i, server_round=i, kind="gradient", arrays=_grads(model, x, _labels(table, rows)),
            num_samples=len(rows), local_steps=1, lr=0.1,
        ))
        truth.append(x)
    return ups, truth


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def throughput(table, context, args) -> dict:
    rows = {}
    for batch, n_updates, chunk in ((1, args.one_sample_updates, 256), (20, args.batch_updates, 32)):
        ups, truth = _fedsgd_updates(table, n_updates, batch, seed=args.seed + batch)
        method = AnalyticInputs(chunk=chunk, seed=args.seed).prepare(context)
        recs: list = []
        run = lambda: recs.append(list(method.reconstruct_many(ups)))  # noqa: E731
        w = np.stack([u.arrays["fc1.weight"] for u in ups])
        b = np.stack([u.arrays["fc1.bias"] for u in ups])
        ref = lambda: inversion_vector(w, b)  # noqa: E731
        run(), ref()  # warm-up: page in the arrays, first-call costs
        t_method, t_ref = [], []
        for r in range(args.repeats):  # interleaved, order alternating
            pair = (run, ref) if r % 2 == 0 else (ref, run)
            for fn in pair:
                dt = _time(fn, 1)[0]
                (t_method if fn is run else t_ref).append(dt)
        rec = recs[-1]
        cos = np.concatenate([match_vectors(r.features, x).cosine for r, x in zip(rec, truth, strict=True)])
        complete = int(sum(r.info["complete"] for r in rec))
        rows[f"batch{batch}"] = {
            "updates": n_updates, "chunk": chunk,
            "updates_per_s": n_updates / float(np.median(t_method)),
            "updates_per_s_range": [n_updates / max(t_method), n_updates / min(t_method)],
            "inversion_vector_updates_per_s": n_updates / float(np.median(t_ref)),
            "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "complete": complete, "complete_ci": list(wilson_interval(complete, n_updates)),
        }
        row = rows[f"batch{batch}"]
        lo, hi = row["updates_per_s_range"]
        print(f"batch {batch:>2}: {row['updates_per_s']:8.1f} updates/s (range {lo:.1f}..{hi:.1f}; inversion vector "
              f"{row['inversion_vector_updates_per_s']:.0f}/s), complete {complete}/{n_updates}, "
              f"mean cosine {cos.mean():.6f}", flush=True)
    return rows


def _local_training(table, rows, *, epochs: int, optimizer: str, lr: float, seed: int, batch: int = 20,
                    float64: bool = False):
    torch.manual_seed(seed)
    model = MLP(table.n_features)
    dtype = torch.float64 if float64 else torch.float32
    model = model.to(dtype)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    model.train()
    steps = 0
    for _ in range(epochs):
        order = rng.permutation(rows)
        for s in range(0, len(order), batch):
            part = order[s : s + batch]
            opt.zero_grad()
            x = torch.from_numpy(table.x[part]).to(dtype)
            nn.CrossEntropyLoss()(model(x), torch.from_numpy(_labels(table, part))).backward()
            opt.step()
            steps += 1
    arrays = {  # the pseudo-gradient of float32 weights, as a recording holds it
        n.removeprefix("layers."): ((start[n] - p.detach()) / (lr * steps)).to(torch.float32).numpy()
        for n, p in model.named_parameters()
    }
    return arrays, steps


def fedavg(table, args) -> list[dict]:
    settings = []
    for optimizer, lr in (("sgd", 0.0005), ("sgd-float64", 0.0005), ("sgd", 0.05), ("adam", 0.0005)):
        for n_utt, epochs in ((20, 1), (40, 1), (48, 1), (20, 2), (20, 3), (40, 2)):
            settings.append((optimizer, lr, n_utt, epochs))
    out = []
    for optimizer, lr, n_utt, epochs in settings:
        rng = np.random.default_rng(args.seed)
        cos_m, cos_n, complete, u_steps, floors = [], [], 0, 0, []
        for c in range(args.clients):
            rows = _client_rows(table, rng, n_utt)
            arrays, steps = _local_training(
                table, rows, epochs=epochs, optimizer=optimizer.split("-")[0], lr=lr, seed=args.seed + c,
                float64=optimizer.endswith("float64"),
            )
            u_steps = steps
            context = ReconstructionContext(
                config={"model": "mlp", "local_epochs": epochs},
                parameter_shapes={k: tuple(v.shape) for k, v in arrays.items()},
            )
            up = ObservedUpdate(
                row=c, client_id=c, server_round=0, kind="pseudo_gradient", arrays=arrays,
                num_samples=len(rows) * epochs, local_steps=steps, lr=lr,
            )
            rec = AnalyticInputs(seed=args.seed).prepare(context).reconstruct(up)
            truth = table.x[rows].astype(np.float64)
            m = match_vectors(rec.features, truth)
            cos_m.append(m.cosine)
            un = truth / np.linalg.norm(truth, axis=1, keepdims=True)
            fn = rec.features / np.maximum(np.linalg.norm(rec.features, axis=1, keepdims=True), 1e-300)
            cos_n.append((fn @ un.T).max(axis=1))
            complete += int(rec.info["complete"])
            floors.append(rec.info["noise_floor"])
        cm, cn = np.concatenate(cos_m), np.concatenate(cos_n)
        row = {
            "optimizer": optimizer, "lr": lr, "utterances": n_utt, "epochs": epochs, "U": u_steps,
            "clients": args.clients, "matched_cosine": float(cm.mean()), "nearest_cosine": float(cn.mean()),
            "share_above_0.99": float((cm > 0.99).mean()),
            "share_ci": list(wilson_interval(int((cm > 0.99).sum()), int(cm.size))),
            "complete": complete, "median_noise_floor": float(np.median(floors)),
        }
        out.append(row)
        print(f"{optimizer:>4} lr {lr:<7} n {n_utt:>2} E {epochs} U {u_steps}: matched cosine {cm.mean():.4f}, "
              f"nearest {cn.mean():.4f}, >0.99 {row['share_above_0.99']:.2f}, complete {complete}/{args.clients}, "
              f"noise floor {row['median_noise_floor']:.1e}",
              flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one-sample-updates", type=int, default=2000)
    p.add_argument("--batch-updates", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clients", type=int, default=8, help="clients per FedAvg setting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", nargs="*", default=[], choices=["throughput", "fedavg"])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    raw = load_demo("demo-private")
    table = normalize_features(raw, method="global", train_mask=np.ones(len(raw), bool))
    context = ReconstructionContext(
        config={"model": "mlp", "local_epochs": 1}, parameter_shapes=parameter_shapes(MLP(988))
    )
    report: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load": os.getloadavg(), "python": platform.python_version(),
                    "numpy": np.__version__, "torch": torch.__version__},
        "threads": args.threads, "seed": args.seed,
    }
    print(f"# {report['command']}  ({report['date']}, load {report['machine']['load'][0]:.1f})")
    with threadpool_limits(limits=args.threads):
        if "throughput" not in args.skip:
            report["throughput"] = throughput(table, context, args)
        if "fedavg" not in args.skip:
            report["fedavg"] = fedavg(table, args)
    report["machine"]["load_after"] = os.getloadavg()
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

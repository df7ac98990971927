"""Benchmark of DP-SGD client training: plain vs Opacus ghost clipping vs Opacus per-sample hooks.

The unit of work is what the simulator does for one client: copy the global
weights into a worker model and run a FedAvg local epoch (Emo-Base MLP
988-256-128-4, dropout 0.2, SGD lr 0.0005, batches of 20), or compute one
FedSGD mini-batch gradient. Three ways of doing it are timed side by side:

* ``plain``: torch, no privacy (what ``fl/simulate.py`` does today);
* ``ghost``: :class:`fedaudit.defenses.dpsgd_trainer.DPSGDTrainer` with
  ``grad_sample_mode="ghost"`` (Opacus ``GradSampleModuleFastGradientClipping``:
  per-sample gradient norms without per-sample gradients, two backward passes);
* ``hooks``: the same trainer with ``grad_sample_mode="hooks"`` (Opacus'
  default ``GradSampleModule``: materialises every per-sample gradient).

Each trainer is built once (as the simulator would, once per run) and reused;
its build time is reported apart. The machine is shared and noisy, so only
ratios measured in one process are meaningful: the three variants are
interleaved, their order rotating from one repetition to the next, and the
report gives the median of the per-repetition ratios with their min..max.
Torch is pinned to one intra-op thread (``--torch-threads``), as the
simulator does by default.

Usage::

    python benchmarks/bench_dpsgd.py                 # default: 7 repetitions
    python benchmarks/bench_dpsgd.py --repeats 3 --quick
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from fedaudit.defenses.dpsgd_trainer import DPSGDConfig, DPSGDTrainer
from fedaudit.models import MLP

VARIANTS = ("plain", "ghost", "hooks")


def make_batches(n_samples: int, batch: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, 988, generator=g)
    y = torch.randint(0, 4, (n_samples,), generator=g)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n_samples, batch)]


def plain_epoch(worker: nn.Module, source: nn.Module, batches, lr: float) -> None:
    with torch.no_grad():
        for p, q in zip(worker.parameters(), source.parameters(), strict=True):
            p.copy_(q)
    opt = torch.optim.SGD(worker.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    worker.train()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(worker(x), y)
        loss.backward()
        opt.step()


def plain_gradient(model: nn.Module, x, y) -> dict[str, np.ndarray]:
    model.train()
    model.zero_grad(set_to_none=True)
    nn.CrossEntropyLoss()(model(x), y).backward()
    return {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


def dp_epoch(trainer: DPSGDTrainer, worker: nn.Module, source: nn.Module, batches, lr: float) -> None:
    with torch.no_grad():
        for p, q in zip(worker.parameters(), source.parameters(), strict=True):
            p.copy_(q)
    trainer.train(worker, batches, optimizer="sgd", lr=lr)


def time_once(fn: Callable[[], None], clients: int) -> float:
    t0 = time.perf_counter()
    for _ in range(clients):
        fn()
    return (time.perf_counter() - t0) / clients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--clients", type=int, default=20, help="client runs per timing (per variant and repetition)")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="fewer clients per timing")
    args = parser.parse_args()
    if args.quick:
        args.clients = max(2, args.clients // 5)
    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(0)

    global_model = MLP(988, hidden=(256, 128), dropout=(0.2, 0.0), n_classes=4)
    worker = copy.deepcopy(global_model)
    import opacus.utils.fast_gradient_clipping_utils  # noqa: F401  (import time is not build time)

    build_s = {}
    trainers = {}
    for mode in ("ghost", "hooks"):
        t0 = time.perf_counter()
        trainers[mode] = DPSGDTrainer(global_model, DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0,
                                                                grad_sample_mode=mode))
        build_s[mode] = time.perf_counter() - t0

    lr = 0.0005
    scenarios: dict[str, dict[str, Callable[[], None]]] = {}
    for label, n in (("FedAvg epoch, 40 samples (2 batches)", 40), ("FedAvg epoch, 400 samples (20 batches)", 400)):
        batches = make_batches(n, 20, seed=n)
        scenarios[label] = {
            "plain": lambda b=batches: plain_epoch(worker, global_model, b, lr),
            "ghost": lambda b=batches: dp_epoch(trainers["ghost"], worker, global_model, b, lr),
            "hooks": lambda b=batches: dp_epoch(trainers["hooks"], worker, global_model, b, lr),
        }
    (x, y), = make_batches(20, 20, seed=7)
    scenarios["FedSGD gradient, 1 batch of 20"] = {
        "plain": lambda: plain_gradient(worker, x, y),
        "ghost": lambda: trainers["ghost"].gradient(global_model, x, y),
        "hooks": lambda: trainers["hooks"].gradient(global_model, x, y),
    }

    print(f"# bench_dpsgd  {dt.datetime.now().isoformat(timespec='seconds')}  {platform.platform()}  "
          f"python {platform.python_version()}  torch {torch.__version__}  threads {torch.get_num_threads()}")
    print(f"# repeats {args.repeats}, {args.clients} client runs per timing; trainer build: "
          + ", ".join(f"{m} {1e3 * s:.1f} ms" for m, s in build_s.items()))
    print()
    print("| scenario | plain ms | ghost ms | hooks ms | ghost / plain | hooks / plain | ghost / hooks |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, fns in scenarios.items():
        for fn in fns.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for r in range(args.repeats):
            order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
            for v in order:
                times[v].append(time_once(fns[v], args.clients))

        def ratio(a: str, b: str) -> str:
            rs = [ta / tb for ta, tb in zip(times[a], times[b], strict=True)]
            return f"{statistics.median(rs):.2f} ({min(rs):.2f}..{max(rs):.2f})"

        med = {v: 1e3 * statistics.median(ts) for v, ts in times.items()}
        print(f"| {label} | {med['plain']:.2f} | {med['ghost']:.2f} | {med['hooks']:.2f} | "
              f"{ratio('ghost', 'plain')} | {ratio('hooks', 'plain')} | {ratio('ghost', 'hooks')} |")


if __name__ == "__main__":
    main()

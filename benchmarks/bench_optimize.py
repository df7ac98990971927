"""Cost and quality of gradient matching ("optimize") and model inversion ("model") on the Emo-Base MLP.

Setting: the SER MLP of Feng et al. (988 -> 256 -> 128 -> 4, dropout 0.2 after the first
hidden layer), the Emo-Base features of ``demo-private`` z-normalised with the statistics
of the whole corpus (the run default ``"global"``). The global model is He-initialised
and, for the "trained" state, given ``--train-steps`` SGD steps (lr 0.1, batch 20) on
``demo-shadow`` (normalised the same way), so the attacked clients' data was never seen.
A client is one speaker of ``demo-private``; its update is made as the simulator makes
it (train mode, so with dropout masks the attacker does not know):

- ``fedsgd``: the gradient of 20 of the speaker's utterances (batch 20, lr 0.1);
- ``fedsgd-nodrop``: the same with dropout 0 (the attacker's model is then exact);
- ``fedavg-sgd`` / ``fedavg-adam``: one local epoch over 40 utterances, batch 20
  (``U = 2``), lr 0.0005, local SGD or Adam (FLConfig's default local optimiser),
  observed as the pseudo-gradient ``(theta_global - theta_local) / (lr U)``.

Part 1 times one matching iteration with 1 and 2 torch threads, interleaved, and gives
the median ratio. Part 2 runs ``GradientMatching`` (labels from the ``labels`` method)
for ``--iterations`` budgets on ``--clients`` clients per setting and reports the
matched cosine (Hungarian matching of recovered to true inputs), with two references:
chance (random Gaussian vectors, matched the same way) and the update's input mixture
``db^T dW / |db|^2`` given to every dummy (a no-optimisation baseline). Part 3 measures
how exact the attacker's simulation is: the cosine, per tensor, between the update
simulated at the true inputs (dropout off, Adam smoothed as the method does) and the
observed one. Part 4 inverts the trained global model for each class
(``invert_model``) and compares each representative with the class means of the data.
Part 5 runs FedSGD batches of 4 and 20 (dropout 0) with the span prior on and off.

Usage::

    .venv/bin/python benchmarks/bench_optimize.py                  # ~13 min on a quiet 2-core machine
    .venv/bin/python benchmarks/bench_optimize.py --quick          # smoke run
    .venv/bin/python benchmarks/bench_optimize.py --json /tmp/bench_optimize.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fedaudit.attacks.reconstruct import ObservedUpdate, ReconstructionContext
from fedaudit.attacks.reconstruct.model_inversion import invert_model
from fedaudit.attacks.reconstruct.optimize import (
    GradientMatching,
    RecordedModel,
    input_mixture,
    local_schedule,
    matched_cosine,
    simulate_update,
)
from fedaudit.data.demo import load_demo
from fedaudit.models import build_model, parameter_shapes
from fedaudit.types import EMOTIONS

HIDDEN, DROPOUT, N_CLASSES = (256, 128), (0.2, 0.0), 4
SETTINGS = {
    "fedsgd": {"kind": "gradient", "n": 20, "dropout": DROPOUT, "lr": 0.1, "optimizer": "sgd"},
    "fedsgd-nodrop": {"kind": "gradient", "n": 20, "dropout": (0.0, 0.0), "lr": 0.1, "optimizer": "sgd"},
    "fedavg-sgd": {"kind": "pseudo_gradient", "n": 40, "dropout": DROPOUT, "lr": 0.0005, "optimizer": "sgd"},
    "fedavg-adam": {"kind": "pseudo_gradient", "n": 40, "dropout": DROPOUT, "lr": 0.0005, "optimizer": "adam"},
}


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _normalised() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    private, shadow = load_demo("demo-private"), load_demo("demo-shadow")
    out = {}
    for name, table in (("private", private), ("shadow", shadow)):
        x = table.x.astype(np.float64)
        std = x.std(0)
        std[std == 0] = 1.0
        out[name] = ((x - x.mean(0)) / std).astype(np.float32)
    labels = {name: np.array([EMOTIONS.index(e) for e in t.emotion]) for name, t in (("private", private),
                                                                                  ("shadow", shadow))}
    return out, labels, np.asarray(private.speaker_id), np.asarray(private.emotion)


def _global_model(state: str, x_shadow: np.ndarray, y_shadow: np.ndarray, steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build_model("mlp", x_shadow.shape[1], hidden=HIDDEN, dropout=DROPOUT, n_classes=N_CLASSES)
    if state == "trained":
        rng = np.random.default_rng(seed)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model.train()
        for _ in range(steps):
            rows = rng.choice(len(x_shadow), 20, replace=False)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(torch.from_numpy(x_shadow[rows])),
                                              torch.from_numpy(y_shadow[rows])).backward()
            opt.step()
    return {k: p.detach().numpy().copy() for k, p in zip(parameter_shapes(model), model.parameters())}


def _context(setting: dict, n_features: int) -> ReconstructionContext:
    model = build_model("mlp", n_features, hidden=HIDDEN, dropout=setting["dropout"], n_classes=N_CLASSES)
    config = {"model": "mlp", "hidden": list(HIDDEN), "dropout": list(setting["dropout"]), "n_classes": N_CLASSES,
              "batch_size": 20, "local_epochs": 1, "optimizer": setting["optimizer"], "lr": setting["lr"]}
    return ReconstructionContext(config=config, parameter_shapes=parameter_shapes(model),
                                 data={"n_features": n_features})


def _client_update(setting: dict, weights: dict, x: np.ndarray, y: np.ndarray, seed: int) -> ObservedUpdate:
    """The update the simulator's client would send (train mode: dropout on)."""
    torch.manual_seed(seed)
    model = build_model("mlp", x.shape[1], hidden=HIDDEN, dropout=setting["dropout"], n_classes=N_CLASSES)
    with torch.no_grad():
        for p, name in zip(model.parameters(), weights):
            p.copy_(torch.from_numpy(weights[name]))
    model.train()
    names = list(weights)
    if setting["kind"] == "gradient":
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        arrays = {k: g.numpy() for k, g in zip(names, torch.autograd.grad(loss, list(model.parameters())))}
        return ObservedUpdate(row=seed, client_id=seed, server_round=0, kind="gradient", arrays=arrays,
                              num_samples=len(x), local_steps=1, lr=setting["lr"], global_weights=weights)
    opt_cls = torch.optim.Adam if setting["optimizer"] == "adam" else torch.optim.SGD
    opt = opt_cls(model.parameters(), lr=setting["lr"])
    steps = 0
    for start in range(0, len(x), 20):  # the client's permutation is the order of x
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x[start:start + 20])),
                                          torch.from_numpy(y[start:start + 20])).backward()
        opt.step()
        steps += 1
    local = {k: p.detach().numpy() for k, p in zip(names, model.parameters())}
    arrays = {k: ((weights[k].astype(np.float64) - local[k]) / (setting["lr"] * steps)).astype(np.float32)
              for k in names}
    return ObservedUpdate(row=seed, client_id=seed, server_round=0, kind="pseudo_gradient", arrays=arrays,
                          num_samples=len(x), local_steps=steps, lr=setting["lr"], global_weights=weights)


def _clients(x: np.ndarray, y: np.ndarray, speakers: np.ndarray, n: int, count: int, seed: int):
    rng = np.random.default_rng(seed)
    chosen = rng.choice(np.unique(speakers), count, replace=False)
    for k, spk in enumerate(chosen):
        rows = rng.permutation(np.flatnonzero(speakers == spk))[:n]
        yield k, x[rows], y[rows]


def part1_threads(setting_name: str, weights: dict, data, pairs: int, iterations: int) -> dict:
    setting = SETTINGS[setting_name]
    (x_all, y_all, speakers) = data
    _, x, y = next(_clients(x_all, y_all, speakers, setting["n"], 1, seed=99))
    update = _client_update(setting, weights, x, y, seed=0)
    ctx = _context(setting, x.shape[1])
    times: dict[int, list[float]] = {1: [], 2: []}
    ratios = []
    for i in range(pairs):
        order = (1, 2) if i % 2 == 0 else (2, 1)
        pair = {}
        for threads in order:
            method = GradientMatching(iterations=iterations, num_threads=threads, seed=i).prepare(ctx)
            start = time.perf_counter()
            method.reconstruct(update, labels=y)
            pair[threads] = (time.perf_counter() - start) / iterations * 1000
            times[threads].append(pair[threads])
        ratios.append(pair[2] / pair[1])
    return {"setting": setting_name, "ms_per_iteration_1": statistics.median(times[1]),
            "ms_per_iteration_2": statistics.median(times[2]), "ratio_2_over_1": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios), "pairs": pairs, "iterations": iterations}


def part2_quality(weights: dict, data, budgets: list[int], clients: int, settings: list[str],
                  mixture_budgets: list[int]) -> list[dict]:
    x_all, y_all, speakers = data
    rows = []
    for name in settings:
        setting = SETTINGS[name]
        ctx = _context(setting, x_all.shape[1])
        runs = [("random", b) for b in budgets] + [("mixture", b) for b in mixture_budgets]
        per = {r: {"cos": [], "hit": [], "wall": [], "cpu": [], "loss": [], "labels_exact": []} for r in runs}
        chance, mixture = [], []
        for k, x, y in _clients(x_all, y_all, speakers, setting["n"], clients, seed=1):
            update = _client_update(setting, weights, x, y, seed=k)
            rng = np.random.default_rng(k)
            chance.append(matched_cosine(rng.normal(size=x.shape), x).mean())
            v = input_mixture(update.arrays["fc1.weight"], update.arrays["fc1.bias"])
            mixture.append(matched_cosine(np.tile(v, (len(x), 1)), x).mean())
            for run in runs:
                init, budget = run
                method = GradientMatching(iterations=budget, init=init, seed=k).prepare(ctx)
                wall, cpu = time.perf_counter(), time.process_time()
                rec = method.reconstruct(update)
                per[run]["wall"].append(time.perf_counter() - wall)
                per[run]["cpu"].append(time.process_time() - cpu)
                cos = matched_cosine(rec.features, x)
                per[run]["cos"].append(cos.mean())
                per[run]["hit"].append((cos > 0.9).mean())
                per[run]["loss"].append(rec.info["matching_loss"])
                per[run]["labels_exact"].append(
                    float(np.array_equal(rec.label_counts, np.bincount(y, minlength=N_CLASSES)))
                )
                print(f"  {name} client {k} {init} it {budget}: cos {cos.mean():.3f} (>0.9: {(cos > 0.9).mean():.2f}) "
                      f"loss {rec.info['matching_loss']:.3f} {per[run]['wall'][-1]:.1f} s wall, "
                      f"load {_load()}", flush=True)
        for run in runs:
            p = per[run]
            rows.append({
                "setting": name, "init": run[0], "iterations": run[1], "clients": clients, "n": setting["n"],
                "cos_mean": float(np.mean(p["cos"])), "cos_sd": float(np.std(p["cos"])),
                "cos_min_client": float(np.min(p["cos"])), "share_above_0.9": float(np.mean(p["hit"])),
                "matching_loss": float(np.mean(p["loss"])), "labels_exact": float(np.mean(p["labels_exact"])),
                "wall_s": float(np.median(p["wall"])), "cpu_s": float(np.median(p["cpu"])),
                "chance_cos": float(np.mean(chance)), "mixture_cos": float(np.mean(mixture)),
            })
    return rows


def part5_span(weights: dict, data, clients: int, iterations: int) -> list[dict]:
    """The span prior on and off, FedSGD without dropout, batches of 4 and 20 (labels inferred)."""
    x_all, y_all, speakers = data
    out = []
    for n in (4, 20):
        setting = {**SETTINGS["fedsgd-nodrop"], "n": n}
        ctx = _context(setting, x_all.shape[1])
        for span in (True, False):
            cos, wall = [], []
            for k, x, y in _clients(x_all, y_all, speakers, n, clients, seed=2):
                update = _client_update(setting, weights, x, y, seed=k)
                start = time.perf_counter()
                rec = GradientMatching(iterations=iterations, span=span, seed=k).prepare(ctx).reconstruct(update)
                wall.append(time.perf_counter() - start)
                cos.append(matched_cosine(rec.features, x).mean())
            out.append({"n": n, "span": span, "iterations": iterations, "clients": clients,
                        "cos_mean": float(np.mean(cos)), "cos_sd": float(np.std(cos)), "wall_s": float(np.median(wall))})
            print("span", out[-1], flush=True)
    return out


def part3_fidelity(weights: dict, data, settings: list[str]) -> list[dict]:
    x_all, y_all, speakers = data
    out = []
    for name in settings:
        setting = SETTINGS[name]
        ctx = _context(setting, x_all.shape[1])
        model = RecordedModel(ctx)
        smoothing = GradientMatching().adam_smoothing
        cos = []
        for k, x, y in _clients(x_all, y_all, speakers, setting["n"], 3, seed=1):
            update = _client_update(setting, weights, x, y, seed=k)
            params = model.params(weights, requires_grad=True)
            schedule, _ = local_schedule(len(x), local_steps=update.local_steps, batch_size=20, local_epochs=1)
            onehot = torch.nn.functional.one_hot(torch.from_numpy(y), N_CLASSES).float()
            for smooth in (0.0, smoothing):
                sim = simulate_update(model, params, torch.from_numpy(x), onehot, kind=setting["kind"],
                                      lr=setting["lr"], schedule=schedule, optimizer=setting["optimizer"],
                                      create_graph=False, adam_smoothing=smooth)
                cos.append({"smoothing": smooth, **{
                    n: float((s.detach().numpy() * update.arrays[n]).sum()
                             / (np.linalg.norm(s.detach().numpy()) * np.linalg.norm(update.arrays[n]) + 1e-30))
                    for n, s in zip(model.names, sim)}})
        for smooth in sorted({c["smoothing"] for c in cos}):
            chosen = [c for c in cos if c["smoothing"] == smooth]
            if setting["optimizer"] != "adam" and smooth > 0:
                continue
            out.append({"setting": name, "smoothing": smooth,
                        **{n: float(np.mean([c[n] for c in chosen])) for n in model.names}})
    return out


def part4_model_inversion(weights: dict, x: np.ndarray, y: np.ndarray) -> dict:
    ctx = _context(SETTINGS["fedsgd"], x.shape[1])
    means = np.stack([x[y == c].mean(0) for c in range(N_CLASSES)])
    start = time.perf_counter()
    reps = np.stack([invert_model(weights, ctx, target_class=c, seed=0) for c in range(N_CLASSES)])
    seconds = (time.perf_counter() - start) / N_CLASSES
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    sim = unit(reps) @ unit(means).T
    dist = np.linalg.norm(reps[:, None] - means[None], axis=2)
    return {"cos_own": np.diag(sim).tolist(), "cos_best_other": [float(np.delete(sim[c], c).max())
                                                              for c in range(N_CLASSES)],
            "nearest_mean_by_cosine": sim.argmax(1).tolist(), "nearest_mean_by_distance": dist.argmin(1).tolist(),
            "seconds_per_class": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--mixture-iterations", type=int, nargs="*", default=[300],
                        help="budgets also run with init='mixture'")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--state", choices=["init", "trained"], default="trained")
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["threads", "quality", "fidelity", "inversion", "span"])
    parser.add_argument("--quick", action="store_true", help="1 client, 100 iterations, 2 pairs")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.iterations, args.clients, args.pairs, args.mixture_iterations = [100], 1, 2, []
    torch.set_num_threads(1)
    command = "python benchmarks/bench_optimize.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if v not in (None, False, [])
    )
    print(f"command: {command}\nmachine: {platform.machine()}, {torch.get_num_threads()} torch thread(s) "
          f"outside the method, torch {torch.__version__}, load {_load()}", flush=True)
    x, y, speakers, _ = _normalised()
    weights = _global_model(args.state, x["shadow"], y["shadow"], args.train_steps, seed=0)
    data = (x["private"], y["private"], speakers)
    results: dict[str, object] = {"command": command, "state": args.state, "load_start": _load(),
                                  "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    if "threads" not in args.skip:
        results["threads"] = [part1_threads(s, weights, data, args.pairs, 30) for s in ("fedsgd", "fedavg-sgd")]
        for r in results["threads"]:
            print(f"threads {r['setting']}: {r['ms_per_iteration_1']:.1f} ms/it with 1 thread, "
                  f"{r['ms_per_iteration_2']:.1f} with 2; ratio 2/1 {r['ratio_2_over_1']:.2f} "
                  f"({r['ratio_min']:.2f}..{r['ratio_max']:.2f}, {r['pairs']} pairs)", flush=True)
    if "fidelity" not in args.skip:
        results["fidelity"] = part3_fidelity(weights, data, args.settings)
        for r in results["fidelity"]:
            print("fidelity", r, flush=True)
    if "quality" not in args.skip:
        results["quality"] = part2_quality(weights, data, args.iterations, args.clients, args.settings,
                                           args.mixture_iterations)
        print("\n| setting | n | start | iterations | matched cos (sd over clients) | share > 0.9 | labels exact | "
              "s/update wall | s/update CPU | mixture baseline | chance |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in results["quality"]:
            print(f"| {r['setting']} | {r['n']} | {r['init']} | {r['iterations']} | {r['cos_mean']:.3f} ({r['cos_sd']:.3f}) | "
                  f"{r['share_above_0.9']:.2f} | {r['labels_exact']:.2f} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                  f"{r['mixture_cos']:.3f} | {r['chance_cos']:.3f} |", flush=True)
    if "span" not in args.skip:
        results["span"] = part5_span(weights, data, args.clients, 300)
    if "inversion" not in args.skip:
        results["inversion"] = part4_model_inversion(weights, x["private"], y["private"])
        print("model inversion", results["inversion"], flush=True)
    results["load_end"] = _load()
    print(f"load at the end {results['load_end']}")
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        tmp.replace(args.json)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

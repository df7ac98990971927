"""Permutation test of the stats attack on the demo corpus: type-I error, power, and cost.

Records (or reuses, from OUT/cache) one FedSGD target run on demo-private and its shadow runs on
demo-shadow through the audit grid, fits the stats attack once and refits it on N gender-free
relabellings of the shadow speakers, then

- power: the p-value of the real target (global standardisation, the demo's default);
- type-I error: the same attack and refits scored on the target with its private speakers'
  genders shuffled (a permutation per seed, half female), so that gender carries no information
  about the updates; the share of seeds with p < 0.05;
- cost: the time of the N refits against the one fit.

The refits do not depend on the target's labels, so every seed reuses them: the seeds vary the
target's labelling, not the draw of shadow relabellings.

    python benchmarks/bench_significance.py --rounds 40 --shadow-runs 2 --permutations 20 --seeds 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-significance"))
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--shadow-runs", type=int, default=2)
    parser.add_argument("--permutations", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    from fedaudit.audit.attack import fit_attack
    from fedaudit.audit.grid import AuditConfig, Setting, plan_audit, run_audit
    from fedaudit.audit.significance import RelabelledStore, asr_statistic, refit, shadow_speakers
    from fedaudit.metrics.permutation import balanced_relabellings, significance
    from fedaudit.record import UpdateStore

    config = AuditConfig(rounds=args.rounds, shadow_runs=args.shadow_runs, attacks=("stats",), n_updates=(1,),
                         settings=(Setting(id="fedsgd"),))
    t0 = time.perf_counter()
    run_audit(config, args.out, jobs=args.jobs, force=True)
    task = next(t for t in plan_audit(config).attacks if t.spec["attack"] == "stats")
    root = args.out / "cache" / "recordings"
    print(f"recordings ready in {time.perf_counter() - t0:.0f} s")
    shadows = [UpdateStore.open(root / f"{k}.h5", warn_incomplete=False) for k in task.spec["shadows"]]
    target = UpdateStore.open(root / f"{task.spec['target']}.h5", warn_incomplete=False)
    speakers, genders = shadow_speakers(shadows)
    print(f"target: {len(target.client_ids)} clients, {target.n_updates} updates; shadow: {len(speakers)} speakers "
          f"({int(np.sum(genders == 'F'))} F), {sum(s.n_updates for s in shadows)} updates in {len(shadows)} runs")

    t0 = time.perf_counter()
    attack, _ = fit_attack("stats", shadows=shadows, target=target)
    fit_seconds = time.perf_counter() - t0
    relabellings, possible = balanced_relabellings(genders, n=args.permutations, seed=[0, 4242])
    t0 = time.perf_counter()
    nulls = []
    for labels in relabellings:
        of = dict(zip(speakers.tolist(), labels.tolist(), strict=True))
        views = [RelabelledStore(s, [of[str(x)] for x in s.ground_truth()["speaker_id"].tolist()]) for s in shadows]
        nulls.append(refit(attack, views, target_config=target.config))
    refit_seconds = time.perf_counter() - t0
    score = asr_statistic()

    def test(store: UpdateStore) -> object:
        return significance(score(attack, store)["1"], [score(a, store)["1"] for a in nulls], n_possible=possible)

    real = test(target)
    print(f"power (real target): ASR {real.observed:.3f}, null median {real.null_median:.3f}, "
          f"p95 {real.null_p95:.3f}, p = {real.p_value:.3f} -> {real.verdict()}")
    rejections, ps = 0, []
    truth = target.ground_truth()["gender"]
    for seed in range(args.seeds):
        shuffled = np.array(truth, dtype=object)
        np.random.default_rng(seed).shuffle(shuffled)
        sig = test(RelabelledStore(target, shuffled))
        ps.append(sig.p_value)
        rejections += sig.p_value < 0.05
    print(f"type-I error (target genders shuffled, {args.seeds} seeds): {rejections}/{args.seeds} rejected at "
          f"p < 0.05; p-values median {np.median(ps):.2f}, min {min(ps):.3f}")
    print(f"cost: one fit {fit_seconds:.1f} s; {len(nulls)} refits {refit_seconds:.1f} s "
          f"({refit_seconds / fit_seconds:.1f}x one fit, {refit_seconds / max(1, len(nulls)) / fit_seconds:.2f}x per refit)")


if __name__ == "__main__":
    main()

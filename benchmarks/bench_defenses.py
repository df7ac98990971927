"""Utility, leakage and cost of each defense on the demo corpora, side by side.

For every defense setting, records a FedSGD run of the SER model on
``demo-private`` (same seed, 200 rounds, global standardisation) and reports:
the SER test UAR at the best validation round; the single-update ASR of the
first layer (stats attack fitted on undefended shadow runs, and the inversion
attack fitted on public features); the multiple-update ASR (all of a client's
updates averaged); the privacy spent; bytes sent per client update; wall time.

Usage::

    python benchmarks/bench_defenses.py --shadow-dir /tmp/ba_sgd_g --out-dir /tmp/bench_def
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

from fedaudit.attacks import AttackerKnowledge, InversionAttack, StatsAttack
from fedaudit.audit import record_run, shadow_config
from fedaudit.config import FLConfig
from fedaudit.data.demo import load_demo
from fedaudit.defenses import defenses_from_options, describe_options
from fedaudit.metrics import attack_success
from fedaudit.record import UpdateStore

SETTINGS: dict[str, tuple[dict, dict]] = {
    # name: (FLConfig overrides, defense names and options)
    "none": ({}, {}),
    "dropout 0.4": ({"dropout": (0.4, 0.0)}, {}),
    "dropout 0.6": ({"dropout": (0.6, 0.0)}, {}),
    "udp eps 1000": ({}, {"names": ("udp",), "target_epsilon": 1000.0, "clip": 1.0}),
    "udp eps 100": ({}, {"names": ("udp",), "target_epsilon": 100.0, "clip": 1.0}),
    "udp eps 10": ({}, {"names": ("udp",), "target_epsilon": 10.0, "clip": 1.0}),
    "dp-sgd eps 1000": ({}, {"names": ("dp-sgd",), "target_epsilon": 1000.0, "max_grad_norm": 1.0}),
    "dp-sgd eps 10": ({}, {"names": ("dp-sgd",), "target_epsilon": 10.0, "max_grad_norm": 1.0}),
    "ldp eps 10": ({}, {"names": ("ldp",), "ldp_epsilon": 10.0, "clip": 1.0}),
    "ldp eps 10 + css 0.5": ({}, {"names": ("ldp",), "ldp_epsilon": 10.0, "clip": 1.0, "css_keep": 0.5}),
    "prune 80%": ({}, {"names": ("prune",), "prune_percent": 80.0}),
    "sefl 80% (1024-bit, packed)": ({}, {"names": ("sefl",), "prune_percent": 80.0, "key_bits": 1024,
                                          "encrypted_rounds": 2}),
    "sefl 0% (2048-bit, packed)": ({}, {"names": ("sefl",), "prune_percent": 0.0, "key_bits": 2048,
                                         "encrypted_rounds": 2}),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shadow-dir", type=Path, required=True, help="undefended FedSGD shadow runs (*_run*.h5)")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--only", nargs="*", default=None, help="subset of settings")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--mirror-runs", type=int, default=2,
                   help="shadow runs that mirror the defense too (a defense-aware attacker); 0 = off")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    private, public = load_demo("demo-private"), load_demo("demo-shadow")
    shadows = [UpdateStore.open(x) for x in sorted(args.shadow_dir.glob("*_run*.h5"))]
    stats = StatsAttack(layers=["fc1"], seed=0).fit(AttackerKnowledge(shadows=shadows))
    inversion = InversionAttack(seed=0).fit(AttackerKnowledge(public=public, target_config={"normalization": "global"}))
    rows = {}
    names = args.only or list(SETTINGS)
    for name in names:
        overrides, spec_kwargs = SETTINGS[name]
        config = FLConfig(rounds=args.rounds, seed=0, **overrides)
        options = dict(spec_kwargs)
        defense_names = options.pop("names", ())
        defenses = defenses_from_options(defense_names, options)
        path = args.out_dir / f"{name.replace(' ', '_').replace('%', '').replace('(', '').replace(')', '').replace(',', '')}.h5"
        t0 = time.perf_counter()
        result = record_run(config, private, path, overwrite=True, defenses=defenses,
                            extra_config={"defense_spec": describe_options(defense_names, options)})
        seconds = time.perf_counter() - t0
        with UpdateStore.open(path) as store:
            row = {"ser_test_uar": result.best.test_uar, "seconds": seconds,
                   "bytes_per_update": float(np.mean(store.index["bytes_sent"])),
                   "encrypt_s": float(np.nanmean(store.index["encrypt_seconds"])) if np.isfinite(
                       store.index["encrypt_seconds"]).any() else None,
                   "decrypt_s": float(np.nanmean(store.index["decrypt_seconds"])) if np.isfinite(
                       store.index["decrypt_seconds"]).any() else None}
            attackers = [("stats", stats), ("inversion", inversion)]
            if args.mirror_runs and defenses:
                mirrored = []
                for k in range(args.mirror_runs):
                    scfg = shadow_config(store.config, run=k, seed=500)
                    spath = path.with_name(path.stem + f"_shadow{k}.h5")
                    record_run(scfg, public, spath, overwrite=True, defenses=defenses)
                    mirrored.append(UpdateStore.open(spath))
                attackers.append(("stats_aware", StatsAttack(layers=["fc1"], seed=0).fit(AttackerKnowledge(shadows=mirrored))))
            for label, attack in attackers:
                params = attack.required_parameters()
                row[f"asr_{label}"] = attack_success(attack.predict_proba, store, params, seed=0).asr
                row[f"asr_{label}_all"] = attack_success(attack.predict_proba, store, params, seed=0,
                                                         n_updates="all").asr
            for spent in result.privacy:
                if spent.mechanism in ("udp", "dp-sgd"):
                    eps = list(spent.epsilon_per_client.values())
                    row["epsilon_median"] = float(np.median(eps))
                    row["epsilon_max"] = float(np.max(eps))
                if spent.epsilon_aggregate is not None:
                    row["epsilon_amplified"] = spent.epsilon_aggregate
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    print()
    print("| defense | SER test UAR | ASR layer 1, stats (1 update) | all updates | stats, defense-aware shadows (1) | all | "
          "ASR inversion (1) | all | epsilon per client (median / max) | bytes per update | encrypt s | decrypt s | run s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        eps = f"{r['epsilon_median']:.1f} / {r['epsilon_max']:.1f}" if "epsilon_median" in r else "-"
        enc = f"{r['encrypt_s']:.2f}" if r["encrypt_s"] is not None else "-"
        dec = f"{r['decrypt_s']:.2f}" if r["decrypt_s"] is not None else "-"
        aware = (f"{r['asr_stats_aware']:.3f} | {r['asr_stats_aware_all']:.3f}" if "asr_stats_aware" in r
                 else "- | -")
        print(f"| {name} | {r['ser_test_uar']:.3f} | {r['asr_stats']:.3f} | {r['asr_stats_all']:.3f} | {aware} | "
              f"{r['asr_inversion']:.3f} | {r['asr_inversion_all']:.3f} | {eps} | {r['bytes_per_update'] / 1e6:.2f} MB | "
              f"{enc} | {dec} | {r['seconds']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

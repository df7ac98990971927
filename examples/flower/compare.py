"""Layer-1 leakage of a Flower-recorded run against a fedaudit-simulated run of the same setup.

    python examples/flower/compare.py --out-dir /tmp/flower_compare

Both runs: demo-private, all 32 training clients of fold 0, 10 a round, FedAvg with Adam
(lr 0.0005, one local epoch, batch 20), the MLP 256-128, 20 rounds, global normalisation.
The Flower run goes through Flower's simulation engine and ``RecordingStrategy``; the other
through ``fedaudit.audit.record_run``. Both are scored with the same fitted attacks: the stats
attack on shadow runs that mirror the Flower recording (``run_shadow``), and the inversion attack
on public features (demo-shadow).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--shadow-runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)

    import app as example

    from fedaudit.audit import record_run, run_shadow
    from fedaudit.audit.attack import fit_attack, load_public_features, score_attack
    from fedaudit.config import FLConfig
    from fedaudit.data import load_demo

    args.out_dir.mkdir(parents=True, exist_ok=True)
    setup = example.Setup(clients=32, rounds=args.rounds, client_fraction=10 / 32)
    flower, simulated = args.out_dir / "flower.h5", args.out_dir / "simulated.h5"
    if not flower.exists():
        example.run(setup, out=flower)
    if not simulated.exists():
        config = FLConfig(algorithm="fedavg", rounds=setup.rounds, client_fraction=setup.client_fraction,
                          batch_size=setup.batch_size, lr=setup.lr, local_epochs=setup.local_epochs,
                          optimizer="adam", hidden=setup.hidden, dropout=setup.dropout, seed=setup.seed)
        record_run(config, load_demo("demo-private"), simulated)
    shadow_dir = args.out_dir / "shadow"
    shadows = sorted(shadow_dir.glob("*.h5")) or run_shadow(flower, load_demo("demo-shadow"), out_dir=shadow_dir,
                                                            runs=args.shadow_runs)
    stats, _ = fit_attack("stats", shadows=shadows, target=flower, layers=[1], seed=0)
    inversion, _ = fit_attack("inversion", public=load_public_features(target=flower), target=flower, seed=0)
    rows = {}
    for name, path in (("flower", flower), ("simulated", simulated)):
        for attack_name, attack in (("stats", stats), ("inversion", inversion)):
            result = score_attack(attack, path, repeats=args.repeats, seed=0).results["1"]
            rows[f"{name}/{attack_name}"] = {"asr": result.asr, "auc": result.auc, "n_clients": result.n_clients}
            print(f"{name:10s} {attack_name:10s} layer-1 ASR {result.asr:.3f}  AUC {result.auc:.3f}  "
                  f"({result.n_clients} clients)")
    (args.out_dir / "compare.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Label confounds: how much of the gender attacks' success the emotion-label mix alone explains.

Three parts, every figure with its 95% interval and chance level:

1. The emotion mix by gender of ``demo-private`` and ``demo-shadow`` (and of the skewed variants
   of part 3): utterance counts per emotion and gender, with a chi-square test of independence.
2. The demo: for FedSGD and FedAvg under ``--normalization speaker`` and ``global``, a target run
   of ``demo-private`` (``fedaudit record``), shadow runs of ``demo-shadow`` (``fedaudit
   shadow``), and the ``stats`` and ``label-only`` attacks (``fedaudit attack --json``), at 1, 5,
   10 and all updates averaged. Every command is printed before it runs.
3. Gender-skewed variants of both corpora: each speaker keeps all of the utterances of two
   "majority" emotions (women: happy and sad; men: angry and neutral) and a random part of the
   other two, so that the majority pair makes up ``--skews`` of the speaker's utterances (0.7:
   12 + 12 + 5 + 5 utterances of 48; 1.0: the minority pair dropped). The CLI records whole
   corpora only, so these runs are recorded with the Python API (``record_run``, ``run_shadow``,
   the functions ``fedaudit record`` and ``fedaudit shadow`` call; printed as such) and attacked
   with ``fedaudit attack``.

4. What the baseline's estimator reads: a target run per setting (no shadow runs), and for every
   update the class shares the ``label-only`` attack computes (``label_histograms``, the
   ``"uniform"`` estimator ``1/C - db``) beside the true class shares of the client's training
   set (the run's own client split, rebuilt with ``split_clients``): the mean absolute error, and
   the mean share of each gender's majority pair, by block of rounds. The training set is the
   exact truth of a FedAvg update (one local epoch covers it); a FedSGD update's batch of
   ``--batch-size`` utterances is drawn from it (batch membership is not recorded).

Finally, under per-speaker z-normalisation, the ``stats`` attack beside the baseline: the points
each clears above chance, and whether stats' lower 95% bound clears label-only's upper bound (the
rule of the report's "Beside the label-only baseline").

Recordings of a setting are deleted once it is attacked (a 200-round demo recording is about
690 MB), unless ``--keep``.

Usage::

    python benchmarks/bench_labels.py --dir /tmp/bench_labels [--rounds 200] [--shadow-runs 5]
        [--skews 0.7,1.0] [--parts 1,2,3,4] [--keep] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

#: (algorithm, normalisation) of the demo settings, in the order they are run.
DEMO_SETTINGS: tuple[tuple[str, str], ...] = (
    ("fedsgd", "speaker"), ("fedavg", "speaker"), ("fedsgd", "global"), ("fedavg", "global"),
)
#: The emotions each gender keeps in full in the skewed variants; the other two are subsampled.
MAJORITY: dict[str, tuple[str, ...]] = {"F": ("happy", "sad"), "M": ("angry", "neutral")}
#: Attacks scored on every setting; ``label-only:present-share`` is the baseline with LLG's estimator, which
#: ``fedaudit attack`` does not expose, so it is fitted through ``attack_target`` (the function the CLI calls).
ATTACKS: tuple[str, ...] = ("stats", "label-only", "label-only:present-share")
N_UPDATES = "1,5,10,all"


def _say(command: list[str]) -> None:
    print("$ " + " ".join(shlex.quote(a) for a in command), flush=True)


def _run(command: list[str], log: Path) -> None:
    _say(command)
    t0 = time.perf_counter()
    with log.open("a") as f:
        subprocess.run(command, check=True, stdout=f, stderr=subprocess.STDOUT)
    print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)


def mix_table(table) -> dict:
    """Utterance and speaker counts per emotion and gender, with a chi-square test of independence."""
    from scipy.stats import chi2_contingency

    emotions = sorted(set(table.emotion.tolist()))
    counts = np.array([[int(np.sum((table.emotion == e) & (table.gender == g))) for g in ("F", "M")]
                       for e in emotions])
    test = chi2_contingency(counts, correction=False)
    n = counts.sum()
    cramers_v = float(np.sqrt(test.statistic / (n * (min(counts.shape) - 1)))) if n else float("nan")
    speakers = {g: len(set(table.speaker_id[table.gender == g].tolist())) for g in ("F", "M")}
    return {"emotions": emotions, "counts": counts.tolist(), "n_utterances": int(n), "speakers": speakers,
            "chi2": float(test.statistic), "dof": int(test.dof), "p": float(test.pvalue), "cramers_v": cramers_v}


def print_mix(name: str, mix: dict) -> None:
    print(f"\n{name}: {mix['n_utterances']} utterances, {mix['speakers']['F']} F and {mix['speakers']['M']} M speakers")
    print("| emotion | F | M | F share | M share |")
    print("|---|---|---|---|---|")
    tot = np.array(mix["counts"]).sum(axis=0)
    for e, (f, m) in zip(mix["emotions"], mix["counts"], strict=True):
        print(f"| {e} | {f} | {m} | {f / tot[0]:.3f} | {m / tot[1]:.3f} |")
    print(f"chi-square = {mix['chi2']:.2f}, dof {mix['dof']}, p = {mix['p']:.3g}, Cramer's V = {mix['cramers_v']:.3f}")


def skewed(table, skew: float, *, seed: int):
    """Per speaker: every utterance of its gender's majority emotions, a random part of the others.

    The minority emotions keep ``round(n_e (1 - skew) / skew)`` of their ``n_e`` utterances each,
    so that with equal counts per emotion the majority pair makes up ``skew`` of the speaker's data.
    """
    if not 0.5 <= skew <= 1.0:
        raise SystemExit(f"--skews must lie in [0.5, 1]; got {skew}")
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(table), bool)
    for spk in table.speakers:
        rows = np.flatnonzero(table.speaker_id == spk)
        gender = str(table.gender[rows[0]])
        for e in sorted(set(table.emotion[rows].tolist())):
            er = rows[table.emotion[rows] == e]
            k = len(er) if e in MAJORITY[gender] else min(len(er), round(len(er) * (1 - skew) / skew))
            keep[rng.choice(er, size=k, replace=False)] = True
    return table.subset(keep)


def _attack(target: Path, shadow_dir: Path, attack: str, out: Path, log: Path) -> dict:
    if ":" in attack:
        from fedaudit.audit.attack import attack_target

        key, estimator = attack.split(":")
        n_updates = [int(k) if k.isdigit() else k for k in N_UPDATES.split(",")]
        command = [f"python: attack_target({str(target)!r}, attack={key!r}, shadows=[{str(shadow_dir)!r}], "
                   f"options={{'estimator': {estimator!r}}}, n_updates={n_updates}, seed=0)"]
        print(f"$ {command[0]}", flush=True)
        t0 = time.perf_counter()
        report = attack_target(target, attack=key, shadows=[shadow_dir], options={"estimator": estimator},
                               n_updates=n_updates, seed=0)
        print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
        data = json.loads(json.dumps(report.to_dict(), default=str))
        out.write_text(json.dumps(data, indent=1))
    else:
        command = ["fedaudit", "attack", str(target), "--shadow", str(shadow_dir), "--attack", attack,
                   "--n-updates", N_UPDATES, "--seed", "0", "--json", str(out), "--force", "-q"]
        _run(command, log)
        data = json.loads(out.read_text())
    results = {k: {f: v[f] for f in ("asr", "ci_low", "ci_high", "chance", "uar", "auc", "n_clients")}
               for k, v in data["results"].items()}
    row = {"command": command, "results": results, "fit_seconds": data["fit_seconds"], "warnings": data["warnings"]}
    fit_info = data.get("card", {}).get("fit_info", {})
    if attack.startswith("label-only"):
        row["mean_histogram_by_gender"] = fit_info.get("mean_histogram_by_gender")
        row["val_uar"] = fit_info.get("val_uar")
    return row


def _ser(path: Path) -> dict:
    from fedaudit.record import UpdateStore

    with UpdateStore.open(path, warn_incomplete=False) as store:
        r = store.result
    return {"test_uar": r.get("test_uar"), "n_clients": r.get("n_clients")}


def _cleanup(paths: list[Path], keep: bool) -> None:
    if keep:
        return
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def demo_setting(args, algorithm: str, norm: str) -> dict:
    name = f"demo-{algorithm}-{norm}"
    target, shadow_dir, log = args.dir / f"{name}.h5", args.dir / f"{name}-shadow", args.dir / f"{name}.log"
    print(f"\n## {name}", flush=True)
    _run(["fedaudit", "record", "--corpus", "demo-private", "--algorithm", algorithm, "--normalization", norm,
          "--rounds", str(args.rounds), "--seed", "0", "--out", str(target), "--force"], log)
    _run(["fedaudit", "shadow", "--like", str(target), "--corpus", "demo-shadow", "--runs", str(args.shadow_runs),
          "--out-dir", str(shadow_dir), "--force"], log)
    row = {"corpus": "demo", "algorithm": algorithm, "normalization": norm, "ser": _ser(target)}
    for attack in ATTACKS:
        row[attack] = _attack(target, shadow_dir, attack, args.dir / f"{name}.{attack.replace(':', '-')}.json", log)
        _print_attack(attack, row[attack])
    _cleanup([target, shadow_dir], args.keep)
    return row


def skewed_setting(args, algorithm: str, norm: str, skew: float, private, shadow) -> dict:
    from fedaudit.audit import record_run, run_shadow
    from fedaudit.config import FLConfig

    name = f"skew{round(100 * skew)}-{algorithm}-{norm}"
    target, shadow_dir, log = args.dir / f"{name}.h5", args.dir / f"{name}-shadow", args.dir / f"{name}.log"
    print(f"\n## {name}", flush=True)
    cfg = FLConfig(algorithm=algorithm, normalization=norm, rounds=args.rounds, seed=0)
    variant = {"skew": skew, "majority": {g: list(e) for g, e in MAJORITY.items()}, "subsample_seed": 0}
    print(f"$ python: record_run(FLConfig(algorithm={algorithm!r}, normalization={norm!r}, rounds={args.rounds}, "
          f"seed=0), skewed(load_demo('demo-private'), {skew}, seed=0), {str(target)!r}, overwrite=True)", flush=True)
    t0 = time.perf_counter()
    result = record_run(cfg, private, target, overwrite=True, data_info={"label_skew": variant})
    print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"$ python: run_shadow({str(target)!r}, skewed(load_demo('demo-shadow'), {skew}, seed=1), "
          f"out_dir={str(shadow_dir)!r}, runs={args.shadow_runs}, overwrite=True)", flush=True)
    t0 = time.perf_counter()
    run_shadow(target, shadow, out_dir=shadow_dir, runs=args.shadow_runs, overwrite=True)
    print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
    row = {"corpus": f"skew {skew}", "algorithm": algorithm, "normalization": norm,
           "ser": {"test_uar": result.best.test_uar, "n_clients": _ser(target)["n_clients"]}}
    for attack in ATTACKS:
        row[attack] = _attack(target, shadow_dir, attack, args.dir / f"{name}.{attack.replace(':', '-')}.json", log)
        _print_attack(attack, row[attack])
    _cleanup([target, shadow_dir], args.keep)
    return row


#: Blocks of rounds (first, last) over which part 4 averages.
ROUND_BLOCKS: tuple[tuple[int, int], ...] = ((1, 10), (11, 50), (51, 200))


def estimator_check(args, algorithm: str, norm: str, skew: float | None, table) -> dict:
    """Inferred class shares of every update of a target run beside its client's true training-set shares."""
    from fedaudit.attacks.reconstruct.labels import label_histograms, output_layer
    from fedaudit.audit import record_run
    from fedaudit.config import FLConfig
    from fedaudit.data.clients import split_clients
    from fedaudit.record import UpdateStore
    from fedaudit.types import EMOTIONS

    name = f"check-{'demo' if skew is None else f'skew{round(100 * skew)}'}-{algorithm}-{norm}"
    target = args.dir / f"{name}.h5"
    cfg = FLConfig(algorithm=algorithm, normalization=norm, rounds=args.rounds, seed=0)
    print(f"\n## {name}\n$ python: record_run(FLConfig(algorithm={algorithm!r}, normalization={norm!r}, "
          f"rounds={args.rounds}, seed=0), {'demo-private' if skew is None else f'skewed(demo-private, {skew})'}, "
          f"{str(target)!r}, overwrite=True)", flush=True)
    result = record_run(cfg, table, target, overwrite=True)
    split = split_clients(table, n_folds=cfg.n_folds, fold=cfg.fold, clients_per_speaker=cfg.clients_per_speaker,
                          val_fraction=cfg.val_fraction, seed=cfg.seed)
    emotions = list(EMOTIONS)
    truth = np.array([[np.mean(table.emotion[c.train_rows] == e) for e in emotions] for c in split.clients])
    major = {g: [emotions.index(e) for e in MAJORITY[g]] for g in ("F", "M")}
    with UpdateStore.open(target, warn_incomplete=False) as store:
        gt = store.ground_truth()
        if list(gt["speaker_id"]) != [c.speaker_id for c in split.clients]:
            raise SystemExit(f"{target}: the rebuilt client split does not match the recording's clients")
        n_classes = int(store.config.get("n_classes", 4))
        layer = output_layer({q: tuple(store.shape(q)) for q in store.parameter_names}, n_classes)
        inferred = label_histograms(store.param(f"{layer}.weight"), store.param(f"{layer}.bias"), estimator="uniform")
        clients = np.asarray(store.index["client_id"])
        rounds = np.asarray(store.index["server_round"])
    gender = np.asarray(gt["gender"])[clients]
    true_rows = truth[clients]
    blocks = []
    for lo, hi in ROUND_BLOCKS:
        sel = (rounds >= lo) & (rounds <= hi)
        if not sel.any():
            continue
        block = {"rounds": [lo, hi], "n_updates": int(sel.sum()),
                 "mae": float(np.abs(inferred[sel] - true_rows[sel]).mean())}
        for g in ("F", "M"):
            gs = sel & (gender == g)
            block[f"{g}_major_inferred"] = float(inferred[gs][:, major[g]].sum(axis=1).mean())
            block[f"{g}_major_true"] = float(true_rows[gs][:, major[g]].sum(axis=1).mean())
        blocks.append(block)
    # A reader of the exact training-set label mix, thresholded at half: the clients it would get right.
    cg = np.asarray(gt["gender"])
    share_f = truth[:, major["F"]].sum(axis=1)
    exact_rule = float(np.mean(np.where(share_f > 0.5, "F", "M") == cg)) if skew is not None else None
    n_minor = [int(round(len(c.train_rows) * (1 - truth[i, major[c.gender]].sum()))) for i, c in enumerate(split.clients)]
    row = {"corpus": "demo" if skew is None else f"skew {skew}", "algorithm": algorithm, "normalization": norm,
           "ser_test_uar": result.best.test_uar, "blocks": blocks, "exact_mix_rule_accuracy": exact_rule,
           "train_sizes": [min(len(c.train_rows) for c in split.clients), max(len(c.train_rows) for c in split.clients)],
           "max_minority_in_train": max(n_minor), "batch_size": cfg.batch_size}
    for b in blocks:
        print(f"  rounds {b['rounds'][0]}-{b['rounds'][1]} ({b['n_updates']} updates): share error {b['mae']:.3f}; "
              f"majority pair F inferred {b['F_major_inferred']:.3f} (true {b['F_major_true']:.3f}), "
              f"M inferred {b['M_major_inferred']:.3f} (true {b['M_major_true']:.3f})", flush=True)
    _cleanup([target], args.keep)
    return row


def print_checks(rows: list[dict]) -> None:
    print("\n| corpus | algorithm | normalisation | SER test UAR | rounds | share error (MAE) | "
          "F majority pair: inferred / true | M majority pair: inferred / true |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        for b in row["blocks"]:
            print(f"| {row['corpus']} | {row['algorithm']} | {row['normalization']} | {row['ser_test_uar']:.3f} | "
                  f"{b['rounds'][0]}-{b['rounds'][1]} | {b['mae']:.3f} | {b['F_major_inferred']:.3f} / "
                  f"{b['F_major_true']:.3f} | {b['M_major_inferred']:.3f} / {b['M_major_true']:.3f} |")
    for row in rows:
        if row["exact_mix_rule_accuracy"] is not None:
            print(f"{row['corpus']} {row['algorithm']} {row['normalization']}: the exact training-set mix, "
                  f"thresholded at half, names {100 * row['exact_mix_rule_accuracy']:.0f}% of the clients' genders; "
                  f"training sets of {row['train_sizes'][0]}-{row['train_sizes'][1]} utterances hold at most "
                  f"{row['max_minority_in_train']} of the minority pair (batch {row['batch_size']})")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _fig(r: dict) -> str:
    return f"{_pct(r['asr'])} ({_pct(r['ci_low'])}-{_pct(r['ci_high'])})"


def _print_attack(attack: str, row: dict) -> None:
    parts = [f"n={k}: {_fig(r)}" for k, r in row["results"].items()]
    print(f"  {attack}: " + "; ".join(parts) + f"; chance {_pct(row['results']['1']['chance'])}", flush=True)
    if row.get("mean_histogram_by_gender"):
        from fedaudit.types import EMOTIONS

        shares = {g: dict(zip(EMOTIONS, h, strict=False)) for g, h in row["mean_histogram_by_gender"].items()}
        print(f"    mean inferred class shares of the shadow updates by gender: {shares}")


def print_tables(rows: list[dict]) -> None:
    print("\n| corpus | algorithm | normalisation | SER test UAR | attack | 1 update | 5 | 10 | all | chance |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        for attack in ATTACKS:
            res = row[attack]["results"]
            cells = " | ".join(_fig(res[k]) if k in res else "-" for k in ("1", "5", "10", "all"))
            print(f"| {row['corpus']} | {row['algorithm']} | {row['normalization']} | "
                  f"{row['ser']['test_uar']:.3f} | {attack} | {cells} | {_pct(res['1']['chance'])} |")


def comparison(row: dict) -> dict:
    """stats beside label-only, single updates: points above chance, and the report's "beyond" rule."""
    s, b = row["stats"]["results"]["1"], row["label-only"]["results"]["1"]
    above_s, above_b = s["asr"] - s["chance"], b["asr"] - b["chance"]
    return {"stats": s, "label_only": b, "stats_above_chance": above_s, "label_only_above_chance": above_b,
            "stats_above_label_only": s["asr"] - b["asr"],
            "share_of_stats_points": (above_b / above_s) if above_s > 0 else None,
            "beyond": s["ci_low"] > b["ci_high"]}


def print_comparisons(rows: list[dict]) -> None:
    print("\n| corpus | algorithm | normalisation | stats | label-only | stats - chance | label-only - chance | "
          "label-only points / stats points | stats lower bound > label-only upper bound |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        c = row["comparison"]
        share = "-" if c["share_of_stats_points"] is None else f"{100 * c['share_of_stats_points']:.0f}%"
        print(f"| {row['corpus']} | {row['algorithm']} | {row['normalization']} | {_fig(c['stats'])} | "
              f"{_fig(c['label_only'])} | {100 * c['stats_above_chance']:+.1f} | "
              f"{100 * c['label_only_above_chance']:+.1f} | {share} | "
              f"{'yes (beyond the label mix)' if c['beyond'] else 'no (within reach of the label mix)'} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, required=True, help="folder of the recordings (made when missing)")
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--shadow-runs", type=int, default=5)
    p.add_argument("--skews", default="0.7,1.0", help="comma-separated shares of the majority emotions")
    p.add_argument("--skew-settings", default="fedsgd-global,fedsgd-speaker,fedavg-global,fedavg-speaker",
                   help="algorithm-normalisation pairs run on the skewed variants")
    p.add_argument("--parts", default="1,2,3,4")
    p.add_argument("--keep", action="store_true", help="keep the recordings")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    from fedaudit.data.sources import load_features

    parts = {int(x) for x in args.parts.split(",")}
    skews = [float(x) for x in args.skews.split(",") if x]
    args.dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
                 "load_start": os.getloadavg(), "argv": sys.argv, "rounds": args.rounds,
                 "shadow_runs": args.shadow_runs, "mix": {}, "rows": []}
    print(f"# {out['date']}, load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("# " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), flush=True)
    private, shadow = load_features(["demo-private"]), load_features(["demo-shadow"])
    variants = {skew: (skewed(private, skew, seed=0), skewed(shadow, skew, seed=1)) for skew in skews}
    if 1 in parts:
        for name, table in [("demo-private", private), ("demo-shadow", shadow),
                            *[(f"{n} skew {s}", v[i]) for s, v in variants.items()
                              for i, n in enumerate(("demo-private", "demo-shadow"))]]:
            out["mix"][name] = mix_table(table)
            print_mix(name, out["mix"][name])
    if 2 in parts:
        for algorithm, norm in DEMO_SETTINGS:
            out["rows"].append(demo_setting(args, algorithm, norm))
    if 3 in parts:
        for skew, (sp, ss) in variants.items():
            for setting in args.skew_settings.split(","):
                algorithm, norm = setting.split("-")
                out["rows"].append(skewed_setting(args, algorithm, norm, skew, sp, ss))
    out["checks"] = []
    if 4 in parts:
        for skew, table in [(None, private), *[(s, v[0]) for s, v in variants.items()]]:
            for setting in args.skew_settings.split(","):
                algorithm, norm = setting.split("-")
                out["checks"].append(estimator_check(args, algorithm, norm, skew, table))
    for row in out["rows"]:
        row["comparison"] = comparison(row)
    if out["rows"]:
        print_tables(out["rows"])
        print_comparisons(out["rows"])
    if out["checks"]:
        print_checks(out["checks"])
    out["load_end"] = os.getloadavg()
    out["wall_seconds"] = time.time() - started
    print(f"\n# {out['wall_seconds'] / 60:.1f} min, load {out['load_end'][0]:.2f} at the end")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`fedaudit shadow`, `fedaudit attack` and `fedaudit leakage`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from fedaudit.cli._common import console, error_boundary
from fedaudit.exceptions import InvalidParameterError

DEFAULT_MODELS = Path("attack_models")


def _n_updates(values: list[str]) -> list[int | str]:
    out: list[int | str] = []
    for v in values:
        for part in v.split(","):
            part = part.strip()
            if part == "all":
                out.append("all")
            elif part.isdigit() and int(part) >= 1:
                out.append(int(part))
            else:
                raise InvalidParameterError(f"--n-updates takes integers >= 1 or 'all' (e.g. 1,5,10,all); got {part!r}.")
    return out


def _shadow_files(shadow: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in shadow:
        if p.is_dir():
            found = sorted(p.glob("*.h5"))
            if not found:
                raise InvalidParameterError(f"The shadow folder {p} holds no .h5 recordings; run `fedaudit shadow` first.")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise InvalidParameterError(f"Shadow recording {p} does not exist; check the path or run `fedaudit shadow`.")
    return files


def _fmt(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def shadow(
    like: Annotated[Path, typer.Option("--like", help="Target recording whose FL setup to mirror.")],
    corpus: Annotated[list[str], typer.Option("--corpus", "-c", help="Shadow corpus (the attacker's own); repeat to combine.")] = ["demo-shadow"],  # noqa: B006
    data_root: Annotated[list[Path], typer.Option("--data-root", help="Root of each non-demo corpus, in order.")] = [],  # noqa: B006
    runs: Annotated[int, typer.Option(min=1, help="Shadow runs (speaker folds and seeds).")] = 5,
    seed: Annotated[int | None, typer.Option(min=0, help="Base seed; run k uses seed + k (default: the target's seed + 1000).")] = None,
    init_from_target: Annotated[bool, typer.Option("--init-from-target", help="Start from the target's initial global model (a server adversary knows it).")] = False,
    out_dir: Annotated[Path, typer.Option(help="Folder of the shadow recordings.")] = Path("recorded_updates/shadow"),
    cache_dir: Annotated[Path | None, typer.Option(help="Feature cache.")] = None,
    jobs: Annotated[int, typer.Option(min=1, help="Processes for feature extraction.")] = 2,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing shadow recordings.")] = False,
) -> None:
    """Re-run the target's FL configuration on shadow corpora and record every update."""
    from fedaudit.data.sources import load_features
    from fedaudit.settings import Settings
    from fedaudit.shadow import run_shadow

    with error_boundary():
        if not like.is_file():
            raise InvalidParameterError(f"Target recording {like} does not exist; record one with `fedaudit record`.")
        settings = Settings()
        table = load_features(corpus, roots=data_root, feature_set=_target_feature_set(like),
                              cache_dir=cache_dir or settings.cache_dir, n_jobs=jobs)
        with Progress(TextColumn("shadow run {task.fields[run]}"), MofNCompleteColumn(), BarColumn(),
                      TimeRemainingColumn(), console=console) as prog:
            from fedaudit.fl.hooks import BaseHook

            class _Tick(BaseHook):
                def __init__(self, task: Any) -> None:
                    self.task = task

                def on_round_end(self, metrics: Any) -> None:
                    prog.update(self.task, advance=1)

            def hooks(k: int) -> list[BaseHook]:
                task = prog.add_task("shadow", total=None, run=k)
                return [_Tick(task)]

            paths = run_shadow(like, table, out_dir=out_dir, runs=runs, seed=seed, overwrite=force, hooks=hooks,
                               init_from_target=init_from_target)
        for p in paths:
            console.print(f"recorded {escape(str(p))}")


def _target_feature_set(path: Path) -> str:
    from fedaudit.record.store import UpdateStore

    with UpdateStore.open(path, warn_incomplete=False) as store:
        return str(store.config.get("data", {}).get("feature_set", "emobase"))


def attack(
    target: Annotated[Path, typer.Argument(help="Target recording to attack.")],
    attack_name: Annotated[str, typer.Option("--attack", "-a", help="stats (fast, shadow-trained), inversion (no shadow FL), cnn (the publication's).")] = "stats",
    shadow: Annotated[list[Path], typer.Option("--shadow", help="Shadow recording or folder of them; repeat.")] = [],  # noqa: B006
    public_corpus: Annotated[list[str], typer.Option("--public-corpus", help="Public corpus for the inversion attack.")] = [],  # noqa: B006
    data_root: Annotated[list[Path], typer.Option("--data-root", help="Root of each non-demo public corpus.")] = [],  # noqa: B006
    model: Annotated[Path | None, typer.Option("--model", help="A saved attack model (.json) instead of fitting.")] = None,
    save_model: Annotated[str | None, typer.Option("--save-model", help="Save the fitted attack as attack_models/NAME.")] = None,
    layer: Annotated[list[int], typer.Option("--layer", min=1, help="Attack this layer only (1 = input); repeat.")] = [],  # noqa: B006
    n_updates: Annotated[list[str], typer.Option("--n-updates", help="Updates averaged per draw, e.g. 1,5,10,all.")] = ["1"],  # noqa: B006
    repeats: Annotated[int, typer.Option(min=1, help="Draws per client.")] = 10,
    seed: Annotated[int, typer.Option(min=0, help="Seed of fitting and of the draws.")] = 0,
    show_clients: Annotated[bool, typer.Option("--clients", help="Print per-client results.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full result as JSON.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing saved model.")] = False,
    epochs: Annotated[int | None, typer.Option(min=1, help="cnn: maximum training epochs per layer (default 50).")] = None,
    max_train_updates: Annotated[int | None, typer.Option(min=1, help="cnn: train on at most this many shadow updates.")] = None,
) -> None:
    """Infer each client's gender from its recorded updates and score the attack success rate (ASR)."""
    from fedaudit.attacks.run import score_attack

    with error_boundary():
        if not target.is_file():
            raise InvalidParameterError(f"Target recording {target} does not exist; check the path.")
        counts = _n_updates(n_updates)
        if model is not None:
            fitted: Any = model
            card: dict[str, Any] = {}
        else:
            options = {k: v for k, v in {"epochs": epochs, "max_train_updates": max_train_updates}.items()
                       if v is not None}
            if options and attack_name != "cnn":
                raise InvalidParameterError(
                    f"--epochs and --max-train-updates apply to the cnn attack only; got --attack {attack_name}."
                )
            fitted, card = _fit(attack_name, target, shadow, public_corpus, data_root, seed, options, layer or None)
            if save_model:
                DEFAULT_MODELS.mkdir(exist_ok=True)
                saved = fitted.save(DEFAULT_MODELS / save_model, card=card, overwrite=force)
                console.print(f"saved attack model {escape(str(saved))}")
        report = score_attack(fitted, target, layers=layer or None, n_updates=counts, repeats=repeats, seed=seed,
                              card=card)
        _print_report(report, show_clients)
        if json_out:
            json_out.write_text(json.dumps(report.to_dict(), indent=2, default=str))
            console.print(f"wrote {escape(str(json_out))}")


def _fit(name: str, target: Path, shadow: list[Path], public_corpus: list[str], data_root: list[Path],
         seed: int, options: dict[str, Any] | None = None,
         layers: list[int] | None = None) -> tuple[Any, dict[str, Any]]:
    from fedaudit.attacks.run import fit_attack
    from fedaudit.record.store import UpdateStore

    if name == "inversion":
        from fedaudit.data.sources import load_features
        from fedaudit.settings import Settings

        with UpdateStore.open(target, warn_incomplete=False) as store:
            normalization = store.config.get("normalization", "global")
            feature_set = store.config.get("data", {}).get("feature_set", "emobase")
        public = load_features(public_corpus or ["demo-shadow"], roots=data_root, feature_set=feature_set,
                               cache_dir=Settings().cache_dir)
        attack, card = fit_attack(name, public=public, normalization=normalization, seed=seed)
    else:
        attack, card = fit_attack(name, shadows=_shadow_files(shadow), seed=seed, options=options, layers=layers)
    return attack, card


def _print_report(report: Any, show_clients: bool) -> None:
    title = f"{report.attack} attack on {escape(report.target)} (layers: {', '.join(report.layers)})"
    if report.results:
        t = Table(title=title)
        for col in ("updates averaged", "ASR", "95% CI", "UAR", "ROC AUC", "chance", "clients"):
            t.add_column(col, justify="right")
        for n, r in report.results.items():
            t.add_row(n, _fmt(r.asr), f"{_fmt(r.ci_low)} - {_fmt(r.ci_high)}", _fmt(r.uar),
                      "-" if math.isnan(r.auc) else f"{r.auc:.3f}", _fmt(r.chance), str(r.n_clients))
        console.print(t)
        if show_clients:
            first = next(iter(report.results.values()))
            c = Table(title="per client")
            for col in ("client", "updates", "truth", "predicted", "P(F)", "score"):
                c.add_column(col, justify="right")
            for p in first.clients:
                c.add_row(str(p.client_id), str(p.n_updates), p.truth or "-", p.predicted, f"{p.p_female:.2f}",
                          _fmt(p.score))
            console.print(c)
    else:
        t = Table(title=title + " - no ground truth: predictions only")
        for col in ("client", "updates", "predicted gender", "P(F)"):
            t.add_column(col, justify="right")
        for p in report.predictions:
            t.add_row(str(p.client_id), str(p.n_updates), p.predicted, f"{p.p_female:.2f}")
        console.print(t)
    fit = report.fit_seconds
    console.print(
        f"fit {'-' if math.isnan(fit) else f'{fit:.1f} s'}, scored {report.updates_scored} updates in "
        f"{report.score_seconds:.2f} s ({report.updates_scored / max(report.score_seconds, 1e-9):.0f} updates/s)"
    )


def leakage(
    target: Annotated[Path, typer.Argument(help="Target recording.")],
    attack_name: Annotated[str, typer.Option("--attack", "-a", help="stats or cnn (shadow-trained, one branch per layer).")] = "stats",
    shadow: Annotated[list[Path], typer.Option("--shadow", help="Shadow recording or folder; repeat.")] = [],  # noqa: B006
    model: Annotated[Path | None, typer.Option("--model", help="A saved attack model (.json).")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Draws per client.")] = 10,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the table as JSON.")] = None,
) -> None:
    """ASR of each layer alone and fused: where in the model the leakage sits."""
    from fedaudit.attacks.base import load_attack
    from fedaudit.attacks.run import layer_leakage

    with error_boundary():
        if not target.is_file():
            raise InvalidParameterError(f"Target recording {target} does not exist; check the path.")
        if attack_name == "inversion" and model is None:
            raise InvalidParameterError("Layer-wise leakage needs a per-layer attack: use --attack stats or cnn.")
        fitted = load_attack(model) if model is not None else _fit(attack_name, target, shadow, [], [], seed)[0]
        results = layer_leakage(fitted, target, repeats=repeats, seed=seed)
        t = Table(title=f"layer-wise leakage, {fitted.name} attack on {escape(str(target))}")
        for col in ("layer", "ASR", "95% CI", "UAR", "ROC AUC", "chance"):
            t.add_column(col, justify="right")
        for i, (name, r) in enumerate(results.items()):
            label = name if name == "fused" else f"{i + 1} ({name})"
            t.add_row(label, _fmt(r.asr), f"{_fmt(r.ci_low)} - {_fmt(r.ci_high)}", _fmt(r.uar),
                      "-" if math.isnan(r.auc) else f"{r.auc:.3f}", _fmt(r.chance))
        console.print(t)
        if json_out:
            json_out.write_text(json.dumps({k: v.to_dict() for k, v in results.items()}, indent=2, default=str))

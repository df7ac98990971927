"""`fedaudit attack`: infer each client's gender from a recording and score the attack."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from fedaudit.cli._common import NoVerify, checksums, console, error_boundary, print_warnings
from fedaudit.exceptions import InvalidParameterError, OutputExistsError

if TYPE_CHECKING:
    from fedaudit.audit.attack import AttackReport
    from fedaudit.metrics.asr import AttackResult
    from fedaudit.metrics.permutation import Significance

#: Options of ``fedaudit attack`` that are hyper-parameters of an attack: flag -> parameter.
_ATTACK_OPTIONS = {"--epochs": "epochs", "--max-train-updates": "max_train_updates"}


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


def _check_attack_options(attack_name: str, options: dict[str, Any]) -> None:
    """Refuse attack options the chosen attack does not take, naming the attacks that do."""
    from fedaudit.attacks import ATTACKS

    cls = ATTACKS.get(attack_name)
    if not options or cls is None or set(options) <= set(cls.param_names()):
        return  # an unknown attack is reported by the library
    takers = sorted(name for name, c in ATTACKS.items() if set(options) <= set(c.param_names()))
    flags = " and ".join(flag for flag in _ATTACK_OPTIONS)
    raise InvalidParameterError(
        f"{flags} apply to the {' and '.join(takers) or 'no'} attack only; got --attack {attack_name}."
    )


#: ``--quiet``: no progress display (it is off anyway when the output is not a terminal).
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display (none is shown when the output is not a terminal).")]


@contextlib.contextmanager
def fit_progress(
    attack_name: str | None, *, out: Console = console, quiet: bool = False
) -> Iterator[Callable[[Mapping[str, Any]], None] | None]:
    """A per-epoch progress bar with an ETA for an attack that reports its fit (``progress`` parameter).

    Yields the callback to give the attack, or ``None`` (no display) when the
    attack reports nothing, when asked to be quiet or when ``out`` is not a terminal.
    """
    from fedaudit.attacks import ATTACKS

    cls = ATTACKS.get(attack_name or "")
    if quiet or not out.is_terminal or cls is None or "progress" not in cls.param_names():
        yield None
        return
    columns = (TextColumn("fitting {task.fields[layer]}"), BarColumn(), TaskProgressColumn(),
               TextColumn("epoch {task.fields[epoch]}  val UAR {task.fields[uar]}"), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=out, transient=True) as prog:
        task = prog.add_task("fit", total=None, layer="the first layer", epoch="-", uar="-")

        def on_epoch(event: Mapping[str, Any]) -> None:
            uar = event.get("val_uar")
            prog.update(
                task, completed=float(event["work_done"]), total=float(event["work_total"]),
                layer=f"{event['layer']} ({int(event['layer_index']) + 1}/{event['n_layers']})",
                epoch=f"{int(event['epoch']) + 1}/{event['epochs']}",
                uar="-" if uar is None or (isinstance(uar, float) and math.isnan(uar)) else f"{uar:.3f}",
            )

        yield on_epoch


def fmt_rate(x: float | None) -> str:
    """A rate as a percentage with one decimal; ``-`` when unknown."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def result_cells(r: AttackResult) -> list[str]:
    """ASR, 95% CI, UAR, ROC AUC and chance of one result, as table cells."""
    return [fmt_rate(r.asr), f"{fmt_rate(r.ci_low)} - {fmt_rate(r.ci_high)}", fmt_rate(r.uar),
            "-" if math.isnan(r.auc) else f"{r.auc:.3f}", fmt_rate(r.chance)]


def significance_line(sig: Significance, *, label: str = "single-update ASR") -> str:
    """One line of a permutation test: the observed figure, the null, and the verdict."""
    return (f"permutation test of the {label} {fmt_rate(sig.observed)}: null median {fmt_rate(sig.null_median)}, "
            f"95th percentile {fmt_rate(sig.null_p95)}, {100 * sig.above_null:+.1f} points above the null median; "
            f"{sig.verdict()}")


def attack(
    target: Annotated[Path, typer.Argument(help="Target recording to attack.")],
    attack_name: Annotated[str, typer.Option("--attack", "-a", help="stats (fast, shadow-trained), inversion (no shadow FL), cnn (the publication's).")] = "stats",
    shadow: Annotated[list[Path], typer.Option("--shadow", help="Shadow recording or folder of them; repeat.")] = [],  # noqa: B006
    public_corpus: Annotated[list[str], typer.Option("--public-corpus", help="Public corpus for the inversion attack.")] = [],  # noqa: B006
    data_root: Annotated[list[Path], typer.Option("--data-root", help="Root of each non-demo public corpus.")] = [],  # noqa: B006
    model: Annotated[Path | None, typer.Option("--model", help="A saved attack model (.json) instead of fitting.")] = None,
    save_model: Annotated[str | None, typer.Option("--save-model", help="Save the fitted attack as NAME in the attack model folder (FEDAUDIT_MODELS_DIR, default attack_models).")] = None,
    layer: Annotated[list[int], typer.Option("--layer", min=1, help="Attack this layer only (1 = input); repeat.")] = [],  # noqa: B006
    n_updates: Annotated[list[str], typer.Option("--n-updates", help="Updates averaged per draw, e.g. 1,5,10,all.")] = ["1"],  # noqa: B006
    repeats: Annotated[int, typer.Option(min=1, help="Draws per client.")] = 10,
    seed: Annotated[int, typer.Option(min=0, help="Seed of fitting and of the draws.")] = 0,
    show_clients: Annotated[bool, typer.Option("--clients", help="Print per-client results.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full result as JSON.")] = None,
    no_verify: NoVerify = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing saved model or --json file.")] = False,
    epochs: Annotated[int | None, typer.Option(min=1, help="cnn: maximum training epochs per layer (default 50).")] = None,
    max_train_updates: Annotated[int | None, typer.Option(min=1, help="cnn: train on at most this many shadow updates.")] = None,
    permutations: Annotated[int, typer.Option(min=0, help="Test the single-update ASR against N refits on gender-free relabellings of the shadow speakers (20 gives p down to 0.048); 0 skips it.")] = 0,
    jackknife: Annotated[bool, typer.Option("--jackknife", help="Also refit leaving one shadow run out: an interval over the attacker's shadow runs.")] = False,
    quiet: Quiet = False,
) -> None:
    """Infer each client's gender from its recorded updates and score the attack success rate (ASR)."""
    with error_boundary(), checksums(not no_verify):
        if not target.is_file():  # before the heavy imports: a wrong path is answered at once
            raise InvalidParameterError(f"Target recording {target} does not exist; check the path.")
        if json_out is not None and json_out.exists() and not force:
            raise OutputExistsError(f"{json_out} already exists.")
        from fedaudit.audit.attack import attack_target
        from fedaudit.settings import Settings

        counts = _n_updates(n_updates)
        options = {k: v for k, v in {"epochs": epochs, "max_train_updates": max_train_updates}.items()
                   if v is not None}
        if model is None:
            _check_attack_options(attack_name, options)
        settings = Settings()
        with fit_progress(None if model is not None else attack_name, quiet=quiet) as progress:
            report = attack_target(
                target, attack=attack_name, model=model, shadows=shadow, public_corpora=public_corpus,
                data_roots=data_root, cache_dir=settings.cache_dir, layers=layer or None, n_updates=counts,
                repeats=repeats, seed=seed, options=options, save_as=save_model, models_dir=settings.models_dir,
                overwrite=force, permutations=permutations, jackknife=jackknife, progress=progress,
            )
        if report.saved_model is not None:
            console.print(f"saved attack model {escape(report.saved_model)}")
        _print_report(report, show_clients)
        for key, sig in report.significance.items():
            console.print(significance_line(sig))
        for key, jack in report.jackknife.items():
            r = report.results[key]
            console.print(
                f"interval over the attacker's shadow runs (jackknife, {len(jack.leave_one_out)} runs): "
                f"{fmt_rate(jack.ci_low)} - {fmt_rate(jack.ci_high)}, beside {fmt_rate(r.ci_low)} - "
                f"{fmt_rate(r.ci_high)} over target clients"
            )
        print_warnings(report.warnings)
        if json_out:
            tmp = json_out.with_name(json_out.name + ".tmp")  # never a half-written file
            tmp.write_text(json.dumps(report.to_dict(), indent=2, default=str))
            os.replace(tmp, json_out)
            console.print(f"wrote {escape(str(json_out))}")


def _print_report(report: AttackReport, show_clients: bool) -> None:
    title = f"{report.attack} attack on {escape(report.target)} (layers: {', '.join(report.layers)})"
    if report.results:
        t = Table(title=title)
        for col in ("updates averaged", "ASR", "95% CI", "UAR", "ROC AUC", "chance", "clients"):
            t.add_column(col, justify="right")
        for n, r in report.results.items():
            t.add_row(n, *result_cells(r), str(r.n_clients))
        console.print(t)
        if show_clients:
            first = next(iter(report.results.values()))
            c = Table(title="per client")
            for col in ("client", "updates", "truth", "predicted", "P(F)", "score"):
                c.add_column(col, justify="right")
            for p in first.clients:
                c.add_row(str(p.client_id), str(p.n_updates), p.truth or "-", p.predicted, f"{p.p_female:.2f}",
                          fmt_rate(p.score))
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

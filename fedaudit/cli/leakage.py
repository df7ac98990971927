"""`fedaudit leakage`: the attack success rate of each layer alone and fused."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from fedaudit.cli._common import NoVerify, checksums, console, error_boundary, print_warnings
from fedaudit.exceptions import InvalidParameterError, OutputExistsError


def leakage(
    target: Annotated[Path, typer.Argument(help="Target recording.")],
    attack_name: Annotated[str, typer.Option("--attack", "-a", help="stats or cnn (shadow-trained, one branch per layer).")] = "stats",
    shadow: Annotated[list[Path], typer.Option("--shadow", help="Shadow recording or folder; repeat.")] = [],  # noqa: B006
    model: Annotated[Path | None, typer.Option("--model", help="A saved attack model (.json).")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Draws per client.")] = 10,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the table as JSON.")] = None,
    no_verify: NoVerify = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --json file.")] = False,
    permutations: Annotated[int, typer.Option(min=0, help="Test every row against N refits on gender-free relabellings of the shadow speakers (20 gives p down to 0.048); 0 skips it.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display (none is shown when the output is not a terminal).")] = False,
) -> None:
    """ASR of each layer alone and fused: where in the model the leakage sits (any model: fc, conv, lstm layers)."""
    with error_boundary(), checksums(not no_verify):
        if not target.is_file():  # before the heavy imports: a wrong path is answered at once
            raise InvalidParameterError(f"Target recording {target} does not exist; check the path.")
        if json_out is not None and json_out.exists() and not force:
            raise OutputExistsError(f"{json_out} already exists.")
        from fedaudit.audit.attack import layer_significance, leakage_of_target
        from fedaudit.cli.attack import fit_progress, result_cells, significance_line

        with fit_progress(None if model is not None else attack_name, quiet=quiet) as progress:
            fitted, results, notes = leakage_of_target(target, attack=attack_name, model=model, shadows=shadow,
                                                       repeats=repeats, seed=seed, progress=progress)
        tests = layer_significance(fitted, target, shadows=shadow if model is None else (), permutations=permutations,
                                   repeats=repeats, seed=seed, observed=results)
        kinds = _layer_kinds(fitted.shapes_)
        numbers = _layer_numbers(target)
        t = Table(title=f"layer-wise leakage, {fitted.name} attack on {escape(str(target))}")
        columns = ["layer", "type", "ASR", "95% CI", "UAR", "ROC AUC", "chance"] + (["null median", "p"] if tests else [])
        for col in columns:
            t.add_column(col, justify="right")
        labels = {}
        for name, r in results.items():
            labels[name] = name if name == "fused" else f"{numbers.get(name, '?')} ({name})"
            extra = [f"{100 * tests[name].null_median:.1f}%", f"{tests[name].p_value:.3f}"] if tests else []
            t.add_row(labels[name], kinds.get(name, "all layers" if name == "fused" else "-"), *result_cells(r), *extra)
        console.print(t)
        for name, sig in tests.items():
            console.print(significance_line(sig, label=f"ASR of layer {labels[name]}" if name != "fused"
                                            else "fused ASR"))
        print_warnings(notes)
        if json_out:
            body = {k: v.to_dict() for k, v in results.items()}
            for k, sig in tests.items():
                body[k]["significance"] = sig.to_dict()
            tmp = json_out.with_name(json_out.name + ".tmp")
            tmp.write_text(json.dumps(body, indent=2, default=str))
            os.replace(tmp, json_out)


def _layer_kinds(shapes: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """``{"conv1": "conv", "lstm1": "recurrent", "fc1": "linear"}`` from an attack's parameter shapes."""
    from fedaudit.attacks.base import layer_of
    from fedaudit.attacks.update_statistics import layer_kind

    layers: dict[str, dict[str, tuple[int, ...]]] = {}
    for p, shape in shapes.items():
        layer = layer_of(p)
        layers.setdefault(layer, {})[p[len(layer) + 1 :]] = shape
    return {layer: layer_kind(own) for layer, own in layers.items()}


def _layer_numbers(target: Path) -> dict[str, int]:
    """1-based position of each layer in the target recording, input first (the CLI's layer numbers)."""
    from fedaudit.record import UpdateStore

    with UpdateStore.open(target, warn_incomplete=False) as store:
        return {layer: i + 1 for i, layer in enumerate(store.layers)}

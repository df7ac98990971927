"""`fedaudit leakage`: the attack success rate of each layer alone and fused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from fedaudit.cli._common import console, error_boundary, print_warnings
from fedaudit.exceptions import InvalidParameterError, OutputExistsError


def leakage(
    target: Annotated[Path, typer.Argument(help="Target recording.")],
    attack_name: Annotated[str, typer.Option("--attack", "-a", help="stats or cnn (shadow-trained, one branch per layer).")] = "stats",
    shadow: Annotated[list[Path], typer.Option("--shadow", help="Shadow recording or folder; repeat.")] = [],  # noqa: B006
    model: Annotated[Path | None, typer.Option("--model", help="A saved attack model (.json).")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Draws per client.")] = 10,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the table as JSON.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --json file.")] = False,
) -> None:
    """ASR of each layer alone and fused: where in the model the leakage sits."""
    with error_boundary():
        if not target.is_file():  # before the heavy imports: a wrong path is answered at once
            raise InvalidParameterError(f"Target recording {target} does not exist; check the path.")
        if json_out is not None and json_out.exists() and not force:
            raise OutputExistsError(f"{json_out} already exists.")
        from fedaudit.audit.attack import leakage_of_target
        from fedaudit.cli.attack import result_cells

        fitted, results, notes = leakage_of_target(target, attack=attack_name, model=model, shadows=shadow, repeats=repeats,
                                            seed=seed)
        t = Table(title=f"layer-wise leakage, {fitted.name} attack on {escape(str(target))}")
        for col in ("layer", "ASR", "95% CI", "UAR", "ROC AUC", "chance"):
            t.add_column(col, justify="right")
        for i, (name, r) in enumerate(results.items()):
            label = name if name == "fused" else f"{i + 1} ({name})"
            t.add_row(label, *result_cells(r))
        console.print(t)
        print_warnings(notes)
        if json_out:
            json_out.write_text(json.dumps({k: v.to_dict() for k, v in results.items()}, indent=2, default=str))

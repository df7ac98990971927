"""`fedaudit shadow`: re-run a target's FL setup on the attacker's own corpora and record it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fedaudit.cli._common import console, error_boundary
from fedaudit.exceptions import InvalidParameterError


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
    n_folds: Annotated[int | None, typer.Option("--n-folds", min=2, help="Speaker folds of the shadow runs (default: the target's, or fewer if the shadow corpus has fewer speakers).")] = None,
) -> None:
    """Re-run the target's FL configuration on shadow corpora and record every update."""
    from fedaudit.audit import run_shadow, shadow_folds, target_feature_set, target_n_frames
    from fedaudit.record import UpdateStore
    from fedaudit.data.sources import load_features
    from fedaudit.hooks import BaseHook
    from fedaudit.settings import Settings

    with error_boundary():
        if not like.is_file():
            raise InvalidParameterError(f"Target recording {like} does not exist; record one with `fedaudit record`.")
        settings = Settings()
        feature_set, rounds = target_feature_set(like)
        table = load_features(corpus, roots=data_root, feature_set=feature_set,
                              cache_dir=cache_dir or settings.cache_dir, n_jobs=jobs, n_frames=target_n_frames(like))
        with UpdateStore.open(like, warn_incomplete=False) as store:
            target_folds = int(store.config.get("n_folds", 5))
        folds = shadow_folds(target_folds, len(table.speakers), n_folds=n_folds)
        why = "as given" if n_folds is not None else (
            "as the target" if folds == target_folds else f"the target has {target_folds}")
        console.print(f"shadow runs use {folds} speaker folds ({why}; the shadow corpora have "
                      f"{len(table.speakers)} speakers)")
        with Progress(TextColumn("shadow run {task.fields[run]}"), MofNCompleteColumn(), BarColumn(),
                      TimeRemainingColumn(), console=console) as prog:

            class _Tick(BaseHook):
                def __init__(self, task: Any) -> None:
                    self.task = task

                def on_round_end(self, event: Any) -> None:
                    prog.update(self.task, advance=1)

            def hooks(k: int) -> list[BaseHook]:
                task = prog.add_task("shadow", total=rounds, run=f"{k + 1}/{runs}")
                return [_Tick(task)]

            paths = run_shadow(like, table, out_dir=out_dir, runs=runs, seed=seed, overwrite=force, hooks=hooks,
                               init_from_target=init_from_target, n_folds=folds)
        for p in paths:
            console.print(f"recorded {escape(str(p))}")

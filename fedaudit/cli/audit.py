"""`fedaudit audit`: run the whole comparison grid (record, shadow-train, attack) into a results folder."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fedaudit.cli._common import console, error_boundary


def audit(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Audit grid (TOML, see docs/audit.md); default: the demo grid.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results folder (resumed if it exists).")] = Path("audit-results"),
    executor: Annotated[str, typer.Option(help="local (process pool) or ray.")] = "local",
    jobs: Annotated[int, typer.Option(min=1, help="Tasks run at once (local workers, or CPUs of a local Ray instance).")] = 2,
    address: Annotated[str | None, typer.Option(help="ray: address of an existing Ray cluster (e.g. ray://head:10001).")] = None,
    rounds: Annotated[int | None, typer.Option(min=1, help="Override the grid's global rounds.")] = None,
    shadow_runs: Annotated[int | None, typer.Option(min=1, help="Override the grid's shadow runs per attacker.")] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="Override the grid's seed.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan and the disk it needs, then stop.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace results of another configuration in --out.")] = False,
) -> None:
    """Record every setting of the grid, train the attacker's shadow runs, attack, and write results.json."""
    from fedaudit.audit.grid import estimate_bytes, load_audit_config, plan_audit, run_audit

    with error_boundary():
        grid = load_audit_config(config, rounds=rounds, shadow_runs=shadow_runs, seed=seed)
        plan = plan_audit(grid)
        estimate = estimate_bytes(plan)
        console.print(
            f"[bold]audit[/]: {len(grid.settings)} settings, {len(plan.recordings)} recordings "
            f"({len([t for t in plan.recordings if t.spec['role'] == 'shadow'])} shadow runs), "
            f"{len(plan.attacks)} attacks; up to {_size(estimate['bytes'])} of {grid.dtype} recordings "
            f"under {escape(str(out / 'cache'))} (nothing is deleted)"
        )
        first = plan.recordings[0].spec["config"]
        folds = sorted({t.spec["config"]["n_folds"] for t in plan.recordings if t.spec["role"] == "shadow"})
        console.print(
            f"  model {escape(grid.model)} (hidden {'-'.join(str(h) for h in first['hidden'])}) on "
            f"{escape(grid.feature_set)} features"
            + (f"; shadow runs on {' / '.join(map(str, folds))} speaker folds "
               + ("(the grid's shadow_folds)" if grid.shadow_folds else "(the target's, capped by the shadow speakers)")
               if folds else "")
        )
        if dry_run:
            for task in plan.tasks:
                console.print(f"  {escape(task.label)}  [dim]{task.key}[/]")
            return
        command = "fedaudit " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), console=console,
        ) as prog:
            overall = prog.add_task("[bold]tasks", total=len(plan.tasks))
            bars: dict[str, Any] = {}

            def on_event(event: str, data: Any) -> None:
                if event == "start":
                    bars[data["key"]] = prog.add_task(escape(data["label"]), total=data["total"])
                elif event == "advance" and data["key"] in bars:
                    prog.update(bars[data["key"]], completed=data["completed"])
                elif event == "done":
                    prog.advance(overall)
                    bar = bars.pop(data["key"], None)
                    if bar is not None:
                        prog.remove_task(bar)

            results = run_audit(grid, out, executor=executor, jobs=jobs, address=address, progress=on_event,
                                command=command, force=force)
        console.print(f"wrote {escape(str(out / 'results.json'))} ({len(results['cells'])} settings, "
                      f"{results['wall_seconds']:.0f} s); next: fedaudit report {escape(str(out))} "
                      f"--out {escape(str(out / 'report'))}")


def _size(n_bytes: int) -> str:
    """``1.2 GB`` from 1 GB up, else ``34.5 MB``."""
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.1f} MB"

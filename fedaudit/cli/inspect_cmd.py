"""`fedaudit inspect`: the summary of a recording."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from fedaudit.cli._common import NoVerify, console, error_boundary


def class_table(per_class: dict[str, Any], *, title: str) -> Table:
    """Precision, recall, F1 and support per class (``SimulationResult.summary()["test_per_class"]``)."""
    out = Table(title=title)
    for col in ("emotion", "precision", "recall", "F1", "support"):
        out.add_column(col, justify="left" if col == "emotion" else "right")
    for name, row in per_class.items():
        out.add_row(escape(str(name)), f"{row.get('precision', float('nan')):.3f}", f"{row.get('recall', float('nan')):.3f}",
                    f"{row.get('f1', float('nan')):.3f}", str(row.get("support", "")))
    return out


def inspect(
    path: Annotated[Path, typer.Argument(help="A recording written by `fedaudit record`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    no_verify: NoVerify = False,
) -> None:
    """Show a recording's configuration, clients, rounds, layers, size and completeness."""
    from fedaudit.record import UpdateStore

    with error_boundary():
        with UpdateStore.open(path, warn_incomplete=False, verify=not no_verify) as store:
            summary = {
                "path": str(path),
                "complete": store.complete,
                "rounds_completed": store.rounds_completed,
                "rounds_planned": store.config.get("rounds"),
                "updates": store.n_updates,
                "clients": len(store.client_ids),
                "size_bytes": store.size_bytes,
                "parameters": {a["name"]: a["shape"] for a in store.architecture},
                "config": store.config,
                "versions": store.versions,
                "result": store.result,
                "defenses": store.config.get("defenses", {"names": []}),
                "privacy": [p.to_dict() for p in store.privacy()],
            }
            if as_json:
                typer.echo(json.dumps(summary, indent=2, sort_keys=True))
                return
            status = "[green]complete[/]" if store.complete else (
                f"[yellow]incomplete[/]: {store.rounds_completed} of {store.config.get('rounds')} rounds"
            )
            head = Table(title=escape(str(path)), show_header=False)
            data = store.config.get("data", {})
            hidden = store.config.get("hidden")
            frames = data.get("frame_shape")
            for key, value in [
                ("status", status),
                ("algorithm", store.config.get("algorithm")),
                ("model", f"{store.config.get('model', 'mlp')} {','.join(map(str, hidden)) if hidden else ''}".strip()),
                ("corpora", ", ".join(data.get("corpora", []))),
                ("features", f"{data.get('feature_set')} ({data.get('n_features')}"
                             + (f": {frames[0]} frames x {frames[1]})" if frames else ")")),
                ("normalisation", store.config.get("normalization")),
                ("lr / batch / local epochs", f"{store.config.get('lr')} / {store.config.get('batch_size')} / "
                                             f"{store.config.get('local_epochs')}"),
                ("seed", store.config.get("seed")),
                ("clients", len(store.client_ids)),
                ("rounds", store.rounds_completed),
                ("updates", store.n_updates),
                ("size", f"{store.size_bytes / 1e6:.1f} MB"),
                ("fedaudit", store.versions.get("fedaudit")),
            ]:
                head.add_row(key, escape(str(value)) if key != "status" else value)
            defenses = store.config.get("defenses", {}) or {}
            names = list(defenses.get("names", []))
            head.add_row("defenses", escape(", ".join(names)) if names else "none")
            for name in names:
                settings = {k: v for k, v in (defenses.get(name) or {}).items() if not isinstance(v, (dict, list))}
                head.add_row(f"  {name}", escape(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                             for k, v in sorted(settings.items()))))
            for spent in store.privacy():
                eps = sorted(spent.epsilon_per_client.values())
                if eps:
                    text = (f"median {eps[len(eps) // 2]:.2f}, max {eps[-1]:.2f} per client "
                            f"(delta {spent.delta:g}, {spent.level} level, {spent.accountant})")
                    if spent.epsilon_aggregate is not None:
                        text += f"; aggregate view {spent.epsilon_aggregate:.2f}"
                    head.add_row(f"epsilon spent ({spent.mechanism})", escape(text))
            res = store.result
            if res:
                head.add_row("best round", str(res.get("best_round")))
                head.add_row("test UAR", f"{res.get('test_uar', float('nan')):.3f}")
                if "test_f1" in res:  # recordings before per-class scores have UAR and accuracy only
                    head.add_row("test accuracy / macro P / R / F1", " / ".join(
                        f"{res.get(k, float('nan')):.3f}" for k in ("test_acc", "test_precision", "test_recall", "test_f1")))
                audit = res.get("privacy_audit")
                if isinstance(audit, dict):
                    claimed = audit.get("epsilon_claimed")
                    text = (f"lower bound {audit.get('epsilon_lower_bound', 0.0):.2f} "
                            f"({audit.get('confidence', 0.95):.0%} confidence, delta {audit.get('delta', 0):g}), "
                            f"claimed {'none' if claimed is None else f'{claimed:.2f}'}; "
                            f"{audit.get('n_canaries')} canaries")
                    head.add_row("epsilon audited (canaries)", escape(text))
            console.print(head)
            per_class = (res or {}).get("test_per_class") or {}
            if per_class:
                console.print(class_table(per_class, title="test scores of the best round, per emotion"))
            layers = Table(title="parameters")
            layers.add_column("layer")
            layers.add_column("parameter")
            layers.add_column("shape")
            for a in store.architecture:
                layers.add_row(a["layer"], a["param"], " x ".join(map(str, a["shape"])))
            console.print(layers)

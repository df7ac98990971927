"""`fedaudit invert`: reconstruct clients' data from a recording and say how close it came."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from fedaudit.cli._common import NoVerify, checksums, console, err_console, error_boundary
from fedaudit.exceptions import InvalidParameterError, OutputExistsError

if TYPE_CHECKING:
    from fedaudit.audit.invert import InversionResult


class _LazyProgress:
    """A progress bar with ETA that appears with the first update reconstructed (so an early error prints alone)."""

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> _LazyProgress:
        return self

    def update(self, done: int, total: int) -> None:
        if self._progress is None:
            self._progress = Progress(TextColumn("reconstructing"), BarColumn(), MofNCompleteColumn(),
                                      TaskProgressColumn(), TimeRemainingColumn(), console=console, transient=True)
            self._progress.start()
            self._task = self._progress.add_task("updates", total=total)
        self._progress.update(self._task, completed=done, total=total)

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def _clients(value: str | None) -> list[int] | None:
    if value is None:
        return None
    out = []
    for part in value.split(","):
        part = part.strip()
        if not part.isdigit():
            raise InvalidParameterError(f"--clients takes client ids separated by commas (e.g. 0,3,5); got {part!r}.")
        out.append(int(part))
    return out


def _options(values: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InvalidParameterError(f"--option takes KEY=VALUE (e.g. estimator=model); got {item!r}.")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip().replace("-", "_")] = value
    return out


def _cell(x: float | None, *, digits: int = 3, unit: str | None = None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if unit == "%":
        return f"{100 * x:.1f}%"
    text = f"{x:.{digits}g}" if abs(x) >= 1000 or (x != 0 and abs(x) < 0.01) else f"{x:.{digits}f}"
    return f"{text} {unit}" if unit else text


def score_table(result: InversionResult) -> Table:
    """The scores of an inversion: each figure with its 95% interval and chance level."""
    t = Table(title=f"{escape(result.method)} reconstruction of {escape(result.recording)} "
                    f"({result.n_updates} updates of {result.n_clients} of {result.n_clients_total} clients)")
    for col, justify in (("score", "left"), ("value", "right"), ("95% CI", "right"), ("chance", "right"),
                         ("better", "center"), ("n", "right")):
        t.add_column(col, justify=justify)
    for m in result.metrics:
        unit = "%" if m.unit == "fraction" else m.unit
        t.add_row(escape(m.label), _cell(m.value, unit=unit),
                  f"{_cell(m.ci_low, unit=unit)} - {_cell(m.ci_high, unit=unit)}", _cell(m.chance, unit=unit),
                  "higher" if m.higher_is_better else "lower", str(m.n))
    return t


def feature_table(result: InversionResult, limit: int = 8) -> Table | None:
    """Per-feature error in the features' own units: the best-recovered named features."""
    if not result.feature_errors:
        return None
    t = Table(title="per-feature error in the features' own units (median over matched vectors; chance: matched "
                    "to other clients' utterances)")
    for col in ("feature", "error", "95% CI", "chance"):
        t.add_column(col, justify="left" if col == "feature" else "right", no_wrap=col == "feature")
    for f in result.feature_errors[:limit]:
        t.add_row(escape(f.name), _cell(f.error, unit=f.unit), f"{_cell(f.ci_low)} - {_cell(f.ci_high)}",
                  _cell(f.chance, unit=f.unit))
    return t


def invert(
    recording: Annotated[Path, typer.Argument(help="The recording to reconstruct from.", show_default=False)],
    method: Annotated[str, typer.Option("--method", "-m", help="Reconstruction method: analytic (features of the first layer), optimize (gradient matching), labels (label counts) or model (model inversion).")] = "analytic",
    clients: Annotated[str | None, typer.Option("--clients", help="Client ids to invert, e.g. 0,3,5 (default: every client with an update).", show_default=False)] = None,
    updates_per_client: Annotated[int, typer.Option("--updates-per-client", min=1, help="Updates reconstructed per client, spread across the run.")] = 3,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="File of reconstructions (default: <recording>.invert-<method>.h5 beside it).", show_default=False)] = None,
    public_corpus: Annotated[list[str], typer.Option("--public-corpus", help="Public corpus for the gender classifier that labels reconstructions (default demo-shadow); repeat.")] = [],  # noqa: B006
    public_root: Annotated[list[Path], typer.Option("--public-root", help="Root of each non-demo public corpus, in order.")] = [],  # noqa: B006
    corpus: Annotated[list[str], typer.Option("--corpus", help="Corpus the run trained on, for the truth (default: the one the recording names); repeat.")] = [],  # noqa: B006
    data_root: Annotated[list[Path], typer.Option("--data-root", help="Root of each non-demo corpus of --corpus, in order.")] = [],  # noqa: B006
    option: Annotated[list[str], typer.Option("--option", help="A method option as KEY=VALUE (e.g. estimator=model); repeat.")] = [],  # noqa: B006
    seed: Annotated[int, typer.Option(min=0, help="Seed of the choice of updates, of the method and of the scores.")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.", show_default=False)] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Save a plot of true against reconstructed features (.png, .svg, .pdf).", show_default=False)] = None,
    no_verify: NoVerify = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing output, --json and --plot files.")] = False,
) -> None:
    """Reconstruct what clients trained on from their recorded updates, and score it against the truth."""
    with error_boundary(), checksums(not no_verify):
        if not recording.is_file():  # before the heavy imports: a wrong path is answered at once
            raise InvalidParameterError(f"Recording {recording} does not exist; check the path (recordings end in .h5).")
        for extra in (json_out, plot):
            if extra is not None and extra.exists() and not force:
                raise OutputExistsError(f"{extra} already exists.")
        if plot is not None and plot.suffix.lower() not in (".png", ".svg", ".pdf"):
            raise InvalidParameterError(f"--plot writes .png, .svg or .pdf; got {plot.name!r}.")
        chosen_clients, options = _clients(clients), _options(option)
        from fedaudit.audit.invert import invert_recording
        from fedaudit.settings import Settings

        settings = Settings()
        with _LazyProgress() as bar:
            result = invert_recording(
                recording, method=method, options=options, clients=chosen_clients,
                max_updates_per_client=updates_per_client, seed=seed, corpora=corpus or None, roots=data_root,
                cache_dir=settings.cache_dir, public_corpora=public_corpus or None, public_roots=public_root,
                out=out, force=force, progress=bar.update,
            )
        console.print(score_table(result))
        features = feature_table(result)
        if features is not None:
            console.print(features)
        for caveat in result.caveats:
            console.print(f"[bold yellow]caveat:[/] {escape(caveat)}")
        console.print(f"reconstructed {result.n_updates} updates in {result.reconstruct_seconds:.2f} s; "
                      f"wrote {escape(str(result.output))}")
        if json_out is not None:
            tmp = json_out.with_name(f".{json_out.name}.tmp")
            tmp.write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False))
            tmp.replace(json_out)
            console.print(f"wrote {escape(str(json_out))}")
        if plot is not None:
            if plot_inversion(result, plot):
                console.print(f"wrote {escape(str(plot))}")
            else:
                err_console.print("[bold yellow]warning:[/] no plot: the method recovered no features to compare.")


def plot_inversion(result: InversionResult, path: Path) -> bool:
    """True against reconstructed features, named and in their units, for a few clients (matplotlib, Agg).

    One panel per feature (the best recovered), one colour per client, the identity line dashed;
    each panel names the feature's error with its 95% interval and the error of a chance
    reconstruction. Returns ``False`` (and writes nothing) when the result holds no features.
    """
    examples = result.examples
    if not examples or not examples.get("clients") or not examples.get("features"):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, units = examples["features"], examples["units"]
    errors = {f.name: f for f in result.feature_errors}
    n = len(names)
    cols = min(3, n)
    rows = -(-n // cols)
    colors = ("#1b6ca8", "#e07b39", "#3a9e5c", "#b8425a", "#7d5ba6", "#8c6d3f")
    with plt.rc_context({"font.size": 8, "axes.spines.top": False, "axes.spines.right": False,
                         "svg.hashsalt": "fedaudit-invert"}):
        fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.0 * rows + 0.6), squeeze=False)
        for j, (name, unit) in enumerate(zip(names, units, strict=True)):
            ax = axes[j // cols][j % cols]
            lo, hi = math.inf, -math.inf
            for k, client in enumerate(examples["clients"]):
                xs = [v[j] for v in client["true"]]
                ys = [v[j] for v in client["reconstructed"]]
                lo, hi = min(lo, *xs, *ys), max(hi, *xs, *ys)
                ax.scatter(xs, ys, s=12, alpha=0.8, color=colors[k % len(colors)],
                           label=f"client {client['client_id']}" + (f" ({client['speaker_id']})" if client.get("speaker_id") else ""))
            if math.isfinite(lo):
                pad = 0.05 * (hi - lo or 1.0)
                ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls="--", lw=0.8, color="#6b6b6b")
            suffix = f" [{unit}]" if unit else ""
            ax.set_xlabel(f"true{suffix}")
            ax.set_ylabel(f"reconstructed{suffix}")
            ax.set_title(name, fontsize=8)
            err = errors.get(name)
            if err is not None:
                ax.text(0.02, 0.98, f"error {_cell(err.error, unit=unit)} (95% CI {_cell(err.ci_low)}-{_cell(err.ci_high)})\n"
                        f"chance {_cell(err.chance, unit=unit)}", transform=ax.transAxes, va="top", fontsize=7)
        for j in range(n, rows * cols):
            axes[j // cols][j % cols].axis("off")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), frameon=False)
        fig.suptitle(f"{result.method} reconstruction of {Path(result.recording).name}: true against reconstructed "
                     f"features ({result.normalization} normalisation undone), the {len(examples['clients'])} "
                     "clients recovered best; dashed: identity", fontsize=9)
        fig.tight_layout(rect=(0, 0.06, 1, 0.95))
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        fig.savefig(tmp, dpi=150)
        plt.close(fig)
    tmp.replace(path)
    return True

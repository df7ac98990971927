"""`fedaudit record`: run a federation and record every client update."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from fedaudit.cli._common import console, error_boundary
from fedaudit.config import ALGORITHMS, NORMALIZATIONS, OPTIMIZERS, FLConfig
from fedaudit.exceptions import InvalidParameterError, OutputExistsError
from fedaudit.hooks import BaseHook, RoundEnd


class _ProgressHook(BaseHook):
    """Live display: round, clients, validation UAR, MB written, ETA."""

    def __init__(self, progress: Progress, rounds: int, recorder_bytes: Any) -> None:
        self.progress = progress
        self.task = progress.add_task("recording", total=rounds, uar="-", mb=0.0, clients=0)
        self._bytes = recorder_bytes

    def on_round_end(self, event: RoundEnd) -> None:
        self.progress.update(
            self.task, advance=1, uar=f"{event.metrics.get('val_uar', float('nan')):.3f}", clients=event.n_clients,
            mb=self._bytes() / 1e6,
        )


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidParameterError(f"--{name} must be one of {list(choices)}; got {value!r}.")
    return value


def _dropout(value: str | None, n_hidden: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        rates = [float(v) for v in value.split(",")]
    except ValueError:
        raise InvalidParameterError(
            f"--dropout takes a rate or comma-separated rates per hidden layer, e.g. 0.2 or 0.2,0.0; got {value!r}."
        ) from None
    if len(rates) == 1:  # the first hidden layer, as in the publication; later layers none
        rates = rates + [0.0] * (n_hidden - 1)
    return tuple(rates)


def _hidden(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        widths = tuple(int(v) for v in value.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise InvalidParameterError(
            f"--hidden takes comma-separated widths >= 1, e.g. 256,128; got {value!r}."
        )
    return widths


def _model_help() -> str:
    from fedaudit.config import DEFAULT_ARCHITECTURES

    names = ", ".join(f"{k} (default --hidden {','.join(map(str, DEFAULT_ARCHITECTURES[k][0]))})"
                      for k in DEFAULT_ARCHITECTURES)
    return (f"Client model: {names}. mlp takes utterance-level features; dnn, cnn and lstm take "
            "--feature-set mfcc-frames.")


def _build(defenses: Any, config: FLConfig, table: Any) -> Any:
    import warnings

    from fedaudit.audit import build_run_defenses
    from fedaudit.cli._common import err_console
    from fedaudit.exceptions import FedAuditWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = build_run_defenses(config, table, defenses)
    for w in caught:
        if issubclass(w.category, FedAuditWarning):  # ours are for the user; library chatter is not
            err_console.print(f"[bold yellow]warning:[/] {escape(str(w.message))}")
    return built


def _privacy_rows(privacy: Any) -> list[tuple[str, str]]:
    """Rows of the summary table: the privacy each DP mechanism claims (typed ``PrivacySpent``)."""
    rows = []
    by_name = {p.mechanism: p for p in privacy}
    for name, label in (("udp", "udp"), ("dp-sgd", "dp_sgd")):
        spent = by_name.get(name)
        if spent is None:
            continue
        eps = list(spent.epsilon_per_client.values())
        if eps:
            rows.append((f"{label} epsilon per client (delta {spent.delta:g})",
                         f"median {np.median(eps):.2f}, max {max(eps):.2f}"))
        if spent.epsilon_aggregate is not None:
            rows.append(("udp epsilon, aggregate view (amplified)", f"{spent.epsilon_aggregate:.2f}"))
    if "ldp" in by_name:
        eps = list(by_name["ldp"].epsilon_per_client.values())
        if eps:
            rows.append(("ldp epsilon per round", f"{eps[0]:g}"))
    return rows


def audit_table(audit: dict[str, Any]) -> Table:
    """The epsilon table of a canary audit: claimed against audited, per DP defense."""
    conf = audit.get("confidence", 0.95)
    out = Table(title=f"Privacy audit: {audit.get('n_canaries')} canary clients ({audit.get('view')} view, "
                      f"{audit.get('canaries_per_round', 0):.1f} per round), delta {audit.get('delta', 0):g}",
                caption=f"LB: lower bound, the larger of one-run and Clopper-Pearson, holds with {conf:.0%} confidence; "
                        "GDP: an estimate")
    for col in ("defense", "claimed eps", f"LB {conf:.0%}", "one-run", "CP", "GDP est.", "verdict"):
        out.add_column(col)
    bounds, gdp, lower = audit.get("bounds", {}), audit.get("gdp", {}), audit.get("epsilon_lower_bound", 0.0)
    common = (f"{lower:.2f}", f"{bounds.get('one_run', {}).get('epsilon', 0.0):.2f}",
              f"{bounds.get('clopper_pearson', {}).get('epsilon', 0.0):.2f}",
              f"{gdp.get('epsilon', float('nan')):.2f}")
    claims = audit.get("claimed") or [{"mechanism": "none", "epsilon": None}]
    for claim in claims:
        eps = claim.get("epsilon")
        if eps is None:
            claimed, verdict = "none", "no DP claim"
        else:
            claimed = f"{eps:.2f} ({claim.get('accountant')})"
            verdict = "[bold red]exceeds[/]" if lower > eps else "[green]below[/]"
        out.add_row(escape(str(claim.get("mechanism"))), escape(claimed), *common, verdict)
    return out


def record(
    corpus: Annotated[list[str], typer.Option("--corpus", "-c", help="Corpus name; repeat to combine corpora (demo-private, demo-shadow, crema-d, iemocap, msp-improv, emodb, ravdess, manifest).")] = ["demo-private"],  # noqa: B006
    data_root: Annotated[list[Path], typer.Option("--data-root", help="Root folder of each non-demo corpus, in order.")] = [],  # noqa: B006
    feature_set: Annotated[str, typer.Option(help="emobase, egemaps, compare, mfcc (per utterance) or mfcc-frames (13 MFCCs per 20 ms frame; for dnn, cnn, lstm).")] = "emobase",
    frames: Annotated[int | None, typer.Option("--frames", min=1, help="mfcc-frames: frames per utterance, padded or truncated (default 300 = 6 s).")] = None,
    algorithm: Annotated[str, typer.Option("--algorithm", "-a", help="fedsgd or fedavg.")] = "fedsgd",
    rounds: Annotated[int, typer.Option(min=1, help="Global rounds.")] = 200,
    seed: Annotated[int, typer.Option(min=0, help="Seed of every random choice.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output .h5 (default recorded_updates/<corpus>_<algorithm>_s<seed>.h5).")] = None,
    lr: Annotated[float | None, typer.Option(help="Client learning rate (default 0.1 FedSGD, 0.0005 FedAvg).")] = None,
    local_epochs: Annotated[int, typer.Option(min=1, help="FedAvg local epochs.")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="Local mini-batch size.")] = 20,
    client_fraction: Annotated[float, typer.Option(help="Share of clients per round.")] = 0.1,
    optimizer: Annotated[str, typer.Option(help="FedAvg local optimiser: sgd or adam.")] = "adam",
    normalization: Annotated[str, typer.Option(help="none, global or speaker.")] = "global",
    model: Annotated[str, typer.Option("--model", "-m", help=_model_help())] = "mlp",
    hidden: Annotated[str | None, typer.Option(help="The model's widths, comma-separated: mlp/dnn dense layers; cnn conv channels then the dense head's width; lstm state size then the dense head's widths.")] = None,
    dropout: Annotated[str | None, typer.Option(help="Dropout rate of the first hidden layer, or one rate per hidden layer (default: the model's, 0.2 first layer for mlp).")] = None,
    clients_per_speaker: Annotated[int, typer.Option(min=1, help="Split each speaker into k clients.")] = 1,
    fold: Annotated[int, typer.Option(min=0, help="Held-out speaker fold.")] = 0,
    n_folds: Annotated[int, typer.Option(min=2, help="Number of speaker folds.")] = 5,
    dtype: Annotated[str, typer.Option(help="Storage of updates: float32 or float16.")] = "float32",
    store_globals: Annotated[bool, typer.Option(help="Also store the global weights of every round.")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="Feature cache (default $FEDAUDIT_CACHE_DIR or ~/.cache/fedaudit).")] = None,
    jobs: Annotated[int, typer.Option(min=1, help="Processes for feature extraction.")] = 2,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing recording.")] = False,
    defense: Annotated[list[str], typer.Option("--defense", "-d", help="prune, udp, ldp, dp-sgd or sefl; repeat to combine.")] = [],  # noqa: B006
    clip: Annotated[float, typer.Option(help="udp/ldp: L2 bound C of the whole update.")] = 1.0,
    noise_multiplier: Annotated[float | None, typer.Option(help="udp/dp-sgd: noise std / clipping bound.")] = None,
    target_epsilon: Annotated[float | None, typer.Option(help="udp/dp-sgd: epsilon to spend by the end of the run.")] = None,
    delta: Annotated[float, typer.Option(help="DP delta.")] = 1e-5,
    accountant: Annotated[str, typer.Option(help="rdp or prv.")] = "rdp",
    max_grad_norm: Annotated[float, typer.Option(help="dp-sgd: per-sample clipping bound.")] = 1.0,
    ldp_epsilon: Annotated[float, typer.Option(help="ldp: epsilon of one update.")] = 10.0,
    css_keep: Annotated[float, typer.Option(help="ldp: share of each round's updates the server keeps (client selection).")] = 1.0,
    prune_percent: Annotated[float, typer.Option(help="prune/sefl: share of smallest |values| zeroed per layer.")] = 80.0,
    key_bits: Annotated[int, typer.Option(help="sefl: Paillier key size (bits).")] = 2048,
    he_mode: Annotated[str, typer.Option(help="sefl: packed or single (one value per ciphertext).")] = "packed",
    he_clip: Annotated[float, typer.Option(help="sefl packed: clip of model-delta values.")] = 0.5,
    encrypted_rounds: Annotated[int, typer.Option(min=-1, help="sefl: rounds run with real encryption (-1 = all).")] = 1,
    insecure_key: Annotated[bool, typer.Option("--insecure-key", help="sefl: allow keys below 1024 bits.")] = False,
    canaries: Annotated[int, typer.Option(min=0, help="Audit the privacy with this many canary clients (0 = off); the audit goes into the run result and <out>.canaries.json.")] = 0,
) -> None:
    """Run a simulated federation and record every client update to HDF5."""
    with error_boundary():
        _choice("algorithm", algorithm, ALGORITHMS)
        _choice("optimizer", optimizer, OPTIMIZERS)
        _choice("normalization", normalization, NORMALIZATIONS)
        _choice("dtype", dtype, ("float32", "float16"))
        from fedaudit.config import default_architecture
        from fedaudit.models import MODELS

        from fedaudit.data.features import FEATURE_SETS
        from fedaudit.models import check_model_input

        _choice("model", model, tuple(MODELS))
        if feature_set in FEATURE_SETS:  # before loading anything
            check_model_input(model, frame_level=FEATURE_SETS[feature_set].frame_level, feature_set=feature_set)
        widths, _ = default_architecture(model, _hidden(hidden))
        config = FLConfig(
            algorithm=algorithm, rounds=rounds, client_fraction=client_fraction, batch_size=batch_size, lr=lr,
            local_epochs=local_epochs, optimizer=optimizer, normalization=normalization, model=model,
            dropout=_dropout(dropout, len(widths)), hidden=widths, clients_per_speaker=clients_per_speaker,
            n_folds=n_folds, fold=fold, seed=seed,
        )
        from fedaudit.defenses import defenses_from_options, describe_options

        options = dict(
            clip=clip, noise_multiplier=noise_multiplier, target_epsilon=target_epsilon, delta=delta,
            accountant=accountant, max_grad_norm=max_grad_norm, ldp_epsilon=ldp_epsilon, css_keep=css_keep,
            prune_percent=prune_percent, key_bits=key_bits, he_mode=he_mode, he_clip=he_clip,
            encrypted_rounds=None if encrypted_rounds < 0 else encrypted_rounds, insecure_key=insecure_key,
        )
        chosen = defenses_from_options(defense, options)
        from fedaudit.audit import record_run
        from fedaudit.data.sources import load_features
        from fedaudit.settings import Settings

        settings = Settings()
        if out is None:
            settings.recordings_dir.mkdir(parents=True, exist_ok=True)
            out = settings.recordings_dir / f"{'+'.join(corpus)}_{algorithm}_s{seed}.h5"
        if out.exists() and not force:
            raise OutputExistsError(f"{out} already exists.")
        if not out.parent.is_dir():
            raise InvalidParameterError(f"The folder {out.parent} does not exist; create it or choose another --out.")
        with Progress(TextColumn("extracting features"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as prog:
            task = prog.add_task("features", total=None)
            table = load_features(
                corpus, roots=data_root, feature_set=feature_set, cache_dir=cache_dir or settings.cache_dir,
                n_jobs=jobs, progress=lambda done, total: prog.update(task, completed=done, total=total),
                n_frames=frames,
            )
        shape = (f"{table.frame_shape[0]} frames x {table.frame_shape[1]}" if table.frame_shape is not None
                 else str(table.n_features))
        console.print(
            f"[bold]{escape('+'.join(corpus))}[/]: {len(table)} utterances, {len(table.speakers)} speakers, "
            f"{shape} {escape(table.feature_set)} features"
        )
        from fedaudit.fl.simulate import build_run_model

        build_run_model(config, table)  # a model that does not fit the features fails here, before any output
        pieces = _build(chosen, config, table)
        t0 = time.perf_counter()
        holder: dict[str, Any] = {}
        with Progress(
            TextColumn("round"), MofNCompleteColumn(), BarColumn(), TaskProgressColumn(),
            TextColumn("clients {task.fields[clients]}  val UAR {task.fields[uar]}  {task.fields[mb]:.1f} MB"),
            TimeRemainingColumn(), console=console,
        ) as prog:
            hook = _ProgressHook(prog, rounds, lambda: out.stat().st_size if out.exists() else 0)
            result = record_run(config, table, out, dtype=dtype, store_globals=store_globals, overwrite=force,
                                hooks=[hook], defenses=pieces, canaries=canaries or None,
                                extra_config={"defense_spec": describe_options(defense, options)})
        holder["elapsed"] = time.perf_counter() - t0
        summary = result.summary()
        table_out = Table(title=f"Recorded {escape(str(out))}", show_header=False)
        for key, value in [
            ("algorithm", algorithm), ("model", f"{model} {','.join(map(str, config.hidden))}"),
            ("rounds", rounds), ("clients", summary["n_clients"]),
            ("held-out speakers", summary["test_speakers"]),
            ("best round (validation UAR)", summary["best_round"]),
            ("validation UAR", f"{summary['val_uar']:.3f}"),
            ("test UAR / accuracy", f"{summary['test_uar']:.3f} / {summary['test_acc']:.3f}"),
            ("test macro precision / recall / F1",
             f"{summary['test_precision']:.3f} / {summary['test_recall']:.3f} / {summary['test_f1']:.3f}"),
            ("defenses", ", ".join(defense) or "none"),
            *_privacy_rows(result.privacy),
            ("file size", f"{out.stat().st_size / 1e6:.1f} MB"),
            ("time", f"{holder['elapsed']:.1f} s"),
        ]:
            table_out.add_row(key, str(value))
        console.print(table_out)
        audit = result.defense_report.get("privacy_audit")
        if audit:
            console.print(audit_table(audit))

"""``fedaudit corpus``: synthesise demo corpora and extract features."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from fedaudit.cli._common import console, err_console, error_boundary

app = typer.Typer(
    no_args_is_help=True,
    help="Synthesise the demo corpora, extract acoustic features, rebuild the demo features.",
)


@contextlib.contextmanager
def _progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A Rich progress bar on stderr, shown from the first update.

    Yields ``update(label, done, total)``; each label gets its own bar.
    """
    tasks: dict[str, TaskID] = {}
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
    )

    def update(label: str, done: int, total: int) -> None:
        if not tasks:
            bar.start()
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=total)
        bar.update(tasks[label], completed=done, total=total)

    try:
        yield update
    finally:
        if tasks:
            bar.stop()


@app.command()
def synth(
    name: Annotated[str, typer.Argument(help="Demo corpus: demo-private or demo-shadow.")],
    out: Annotated[
        Path, typer.Option("--out", file_okay=False, help="Folder for the WAVs and manifest.csv.")
    ],
    seed: Annotated[int, typer.Option(help="Seed of the speakers and the prosody jitter.")] = 0,
    speakers: Annotated[
        int | None,
        typer.Option("--speakers", min=2, help="Even count, half female [default: 40]."),
    ] = None,
    jobs: Annotated[
        int | None, typer.Option("--jobs", min=1, help="espeak-ng processes [default: CPUs].")
    ] = None,
) -> None:
    """Synthesise a demo corpus with espeak-ng (WAV files plus manifest.csv)."""
    from fedaudit.data.synth import MANIFEST_NAME, synthesize_corpus

    with error_boundary(), _progress_bar() as update:
        table = synthesize_corpus(
            name,
            out,
            seed=seed,
            n_speakers=speakers,
            n_jobs=jobs,
            progress=lambda done, total: update(f"synth {name}", done, total),
        )
    console.print(
        f"Wrote {len(table)} files of {table['speaker_id'].nunique()} speakers to "
        f"{escape(str(out))} (manifest: {escape(str(out / MANIFEST_NAME))})."
    )


@app.command()
def extract(
    corpus_dir: Annotated[
        Path,
        typer.Option("--corpus-dir", exists=True, help="Folder with manifest.csv, or a CSV: a synthesised "
                     "corpus's manifest, or any manifest with path, speaker_id, gender, emotion columns."),
    ],
    out: Annotated[
        Path, typer.Option("--out", dir_okay=False, help="Feature table to write (.npz).")
    ],
    feature_set: Annotated[
        str, typer.Option("--feature-set", help="emobase, egemaps, compare or mfcc.")
    ] = "emobase",
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", file_okay=False, help="Per-file feature cache for reruns."),
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Worker processes.")] = 2,
) -> None:
    """Extract one feature vector per utterance of a corpus into a .npz feature table."""
    from fedaudit.data.features import extract_features
    from fedaudit.data.loaders import load_manifest
    from fedaudit.data.synth import MANIFEST_NAME, read_manifest
    from fedaudit.data.table import CORPUS_COLUMNS
    from fedaudit.exceptions import SkippedAudioWarning

    with error_boundary():
        csv = corpus_dir / MANIFEST_NAME if corpus_dir.is_dir() else corpus_dir
        header = csv.read_text().splitlines()[0].split(",") if csv.is_file() else []
        # A synthesised corpus's manifest holds every corpus column; any other goes through the generic loader.
        table = read_manifest(corpus_dir) if set(CORPUS_COLUMNS) <= set(header) else load_manifest(corpus_dir)
        with warnings.catch_warnings(record=True) as caught, _progress_bar() as update:
            warnings.simplefilter("always", SkippedAudioWarning)
            features = extract_features(
                table,
                feature_set=feature_set,
                cache_dir=cache_dir,
                n_jobs=jobs,
                progress=lambda done, total: update(f"extract {feature_set}", done, total),
            )
        for w in caught:
            if issubclass(w.category, SkippedAudioWarning):
                err_console.print(f"[yellow]warning:[/] {escape(str(w.message))}")
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        out.parent.mkdir(parents=True, exist_ok=True)
        features.save(str(out))
    console.print(
        f"Wrote {len(features)} x {features.n_features} {feature_set} features "
        f"of {len(features.speakers)} speakers to {escape(str(out))}."
    )


@app.command("build-demo")
def build_demo(
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out-dir", file_okay=False, help="Where to write [default: the package's data/_demo]."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthesis.")] = 0,
    work_dir: Annotated[
        Path | None,
        typer.Option("--work-dir", file_okay=False, help="Keep the WAVs here [default: temp dir]"),
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", file_okay=False, help="Per-file feature cache.")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Worker processes of extraction.")] = 2,
) -> None:
    """Regenerate the shipped demo features (synthesis with espeak-ng, then Emo-Base)."""
    from fedaudit.data.demo import build_demo_features

    with error_boundary(), _progress_bar() as update:
        written = build_demo_features(
            out_dir, seed=seed, work_dir=work_dir, n_jobs=jobs, cache_dir=cache_dir, progress=update
        )
    for name, path in written.items():
        console.print(f"{name}: {escape(str(path))} ({path.stat().st_size / 1e6:.1f} MB)")

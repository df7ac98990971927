"""The shipped demo corpora: Emo-Base features of two espeak-ng corpora.

``fedaudit/data/_demo/<name>.emobase.npz`` holds the extracted Emo-Base
features of each corpus of :data:`DEMO_CORPORA`, so that the pipeline runs out
of the box without espeak-ng, openSMILE or any licensed corpus.
:func:`build_demo_features` regenerates them (``fedaudit corpus build-demo``).
"""

from __future__ import annotations

import os
import contextlib
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from fedaudit.data.features import extract_features
from fedaudit.data.synth import CORPUS_SPECS, synthesize_corpus
from fedaudit.data.table import FeatureTable
from fedaudit.exceptions import CorpusError

__all__ = ["DEMO_CORPORA", "DEMO_FEATURE_SET", "build_demo_features", "demo_path", "load_demo"]

#: Names of the demo corpora, private (the clients) first, then shadow (the attacker's).
DEMO_CORPORA: tuple[str, ...] = tuple(CORPUS_SPECS)

#: Feature set of the shipped demo features.
DEMO_FEATURE_SET = "emobase"

_PACKAGE_DIR = ("data", "_demo")


def _file_name(name: str) -> str:
    return f"{name}.{DEMO_FEATURE_SET}.npz"


def _check_name(name: str) -> None:
    if name not in DEMO_CORPORA:
        raise CorpusError(
            f"Unknown demo corpus {name!r}. Available demo corpora: {', '.join(DEMO_CORPORA)}."
        )


def demo_path(name: str) -> Path:
    """Path of the shipped feature file of a demo corpus.

    Raises
    ------
    CorpusError
        If ``name`` is not in :data:`DEMO_CORPORA` or its file is not installed.
    """
    _check_name(name)
    ref = resources.files("fedaudit").joinpath(*_PACKAGE_DIR, _file_name(name))
    path = Path(str(ref))
    if not path.is_file():
        raise CorpusError(
            f"The demo features of {name!r} are not installed (expected {path}). "
            "Reinstall fedaudit, or run `fedaudit corpus build-demo` (needs espeak-ng)."
        )
    return path


def load_demo(name: str) -> FeatureTable:
    """Load the shipped Emo-Base features of a demo corpus.

    Parameters
    ----------
    name
        ``"demo-private"`` or ``"demo-shadow"`` (see :data:`DEMO_CORPORA`).

    Returns
    -------
    FeatureTable
        1920 utterances x 988 Emo-Base features: 40 speakers (20 F, 20 M), each
        reading 12 sentences in 4 emotions (prosody presets of espeak-ng).

    Raises
    ------
    CorpusError
        If ``name`` is not a demo corpus or its file is missing.

    Examples
    --------
    >>> table = load_demo("demo-private")
    >>> table.n_features, len(table.speakers)
    (988, 40)
    """
    return FeatureTable.load(str(demo_path(name)))


def build_demo_features(
    out_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    work_dir: str | os.PathLike[str] | None = None,
    n_jobs: int = 2,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Path]:
    """Synthesise the demo corpora and write their Emo-Base features.

    Parameters
    ----------
    out_dir
        Folder for ``<name>.emobase.npz``; ``None`` for the package's own
        ``fedaudit/data/_demo`` (what ships).
    seed
        Seed passed to :func:`~fedaudit.data.synth.synthesize_corpus`.
    work_dir
        Folder to keep the WAV files in (``<work_dir>/<name>/``); ``None`` for a
        temporary folder deleted afterwards.
    n_jobs
        Worker processes of the feature extraction.
    cache_dir
        Feature cache passed to :func:`~fedaudit.data.features.extract_features`.
    progress
        Called as ``progress(stage, done, total)``, with ``stage`` such as
        ``"synth demo-private"`` or ``"extract demo-private"``.

    Returns
    -------
    dict of str to Path
        The written file of each corpus.

    Raises
    ------
    FeatureError
        If espeak-ng is missing or extraction fails.
    """
    out = Path(out_dir) if out_dir is not None else Path(__file__).resolve().parent / "_demo"
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    scratch = (
        contextlib.nullcontext(str(work_dir)) if work_dir is not None
        else tempfile.TemporaryDirectory(prefix="fedaudit-demo-")
    )
    with scratch as tmp:
        base = Path(tmp)
        for name in DEMO_CORPORA:
            synth_cb = extract_cb = None
            if progress is not None:
                synth_cb = _staged(progress, f"synth {name}")
                extract_cb = _staged(progress, f"extract {name}")
            table = synthesize_corpus(name, base / name, seed=seed, progress=synth_cb)
            features = extract_features(
                table,
                feature_set=DEMO_FEATURE_SET,
                cache_dir=cache_dir,
                n_jobs=n_jobs,
                progress=extract_cb,
            )
            path = out / _file_name(name)
            features.save(str(path))
            written[name] = path
    return written


def _staged(progress: Callable[[str, int, int], None], stage: str) -> Callable[[int, int], None]:
    def callback(done: int, total: int) -> None:
        progress(stage, done, total)

    return callback

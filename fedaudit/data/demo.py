"""The shipped demo corpora: Emo-Base features and MFCC frames of two espeak-ng corpora.

``fedaudit/data/_demo/<name>.<feature set>.npz`` holds the extracted features
(:data:`DEMO_FEATURE_SETS`) of each corpus of :data:`DEMO_CORPORA`, so that the
pipeline runs out of the box without espeak-ng, openSMILE or any licensed corpus.
MFCC frames are kept at full length and padded or truncated when loaded.
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

__all__ = ["DEMO_CORPORA", "DEMO_FEATURE_SET", "DEMO_FEATURE_SETS", "build_demo_features", "demo_path", "load_demo"]

#: Names of the demo corpora, private (the clients) first, then shadow (the attacker's).
DEMO_CORPORA: tuple[str, ...] = tuple(CORPUS_SPECS)

#: Feature set of the shipped demo features.
DEMO_FEATURE_SET = "emobase"
#: Every feature set shipped for the demo corpora.
DEMO_FEATURE_SETS: tuple[str, ...] = ("emobase", "mfcc-frames")

_PACKAGE_DIR = ("data", "_demo")
# Frames extracted for the shipped frame features: longer than any demo utterance (20 s).
_FULL_LENGTH = 1000


def _file_name(name: str, feature_set: str = DEMO_FEATURE_SET) -> str:
    return f"{name}.{feature_set}.npz"


def _check_name(name: str) -> None:
    if name not in DEMO_CORPORA:
        raise CorpusError(
            f"Unknown demo corpus {name!r}. Available demo corpora: {', '.join(DEMO_CORPORA)}."
        )


def demo_path(name: str, feature_set: str = DEMO_FEATURE_SET) -> Path:
    """Path of the shipped feature file of a demo corpus.

    Raises
    ------
    CorpusError
        If ``name`` is not in :data:`DEMO_CORPORA`, ``feature_set`` not in
        :data:`DEMO_FEATURE_SETS`, or its file is not installed.
    """
    _check_name(name)
    if feature_set not in DEMO_FEATURE_SETS:
        raise CorpusError(
            f"The demo corpus {name!r} ships the feature sets {list(DEMO_FEATURE_SETS)}; got {feature_set!r}. "
            "Synthesise its audio with `fedaudit corpus synth` to extract other features."
        )
    ref = resources.files("fedaudit").joinpath(*_PACKAGE_DIR, _file_name(name, feature_set))
    path = Path(str(ref))
    if not path.is_file():
        raise CorpusError(
            f"The demo features of {name!r} are not installed (expected {path}). "
            "Reinstall fedaudit, or run `fedaudit corpus build-demo` (needs espeak-ng)."
        )
    return path


def load_demo(name: str, *, feature_set: str = DEMO_FEATURE_SET, n_frames: int | None = None) -> FeatureTable:
    """Load the shipped features of a demo corpus (Emo-Base unless asked otherwise).

    Parameters
    ----------
    name
        ``"demo-private"`` or ``"demo-shadow"`` (see :data:`DEMO_CORPORA`).
    feature_set
        A key of :data:`DEMO_FEATURE_SETS`.
    n_frames
        Frame-level sets: frames per utterance (default
        :data:`~fedaudit.data.features.DEFAULT_FRAMES`), padded or truncated.

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
    from fedaudit.data.features import DEFAULT_FRAMES, FEATURE_SETS

    table = FeatureTable.load(str(demo_path(name, feature_set)))
    if FEATURE_SETS[feature_set].frame_level:
        return table.with_frames(DEFAULT_FRAMES if n_frames is None else n_frames)
    if n_frames is not None:
        raise CorpusError(f"n_frames applies to frame-level feature sets; {feature_set!r} is utterance-level.")
    return table


def build_demo_features(
    out_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    work_dir: str | os.PathLike[str] | None = None,
    n_jobs: int = 2,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Path]:
    """Synthesise the demo corpora and write their features (every set of :data:`DEMO_FEATURE_SETS`).

    Parameters
    ----------
    out_dir
        Folder for ``<name>.<feature set>.npz``; ``None`` for the package's own
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
            for feature_set in DEMO_FEATURE_SETS:
                frames = {"n_frames": _FULL_LENGTH} if feature_set != DEMO_FEATURE_SET else {}
                features = extract_features(
                    table,
                    feature_set=feature_set,
                    cache_dir=cache_dir,
                    n_jobs=n_jobs,
                    progress=extract_cb,
                    **frames,
                )
                if frames:  # keep every frame, no more padding than the longest utterance needs
                    features = features.with_frames(int(features.lengths.max()))  # type: ignore[union-attr]
                path = out / _file_name(name, feature_set)
                features.save(str(path))
                if feature_set == DEMO_FEATURE_SET:
                    written[name] = path
    return written


def _staged(progress: Callable[[str, int, int], None], stage: str) -> Callable[[int, int], None]:
    def callback(done: int, total: int) -> None:
        progress(stage, done, total)

    return callback

"""Turn corpus names (and roots) into one feature table."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from fedaudit.data.table import FeatureTable
from fedaudit.exceptions import CorpusError

__all__ = ["count_speakers", "load_features"]


def load_features(
    corpora: Sequence[str],
    *,
    roots: Sequence[str | os.PathLike[str]] = (),
    feature_set: str = "emobase",
    cache_dir: str | os.PathLike[str] | None = None,
    n_jobs: int = 2,
    progress: Callable[[int, int], None] | None = None,
    n_frames: int | None = None,
) -> FeatureTable:
    """Features of one or more corpora, combined.

    Demo corpora (``demo-private``, ``demo-shadow``) come from the features
    shipped with fedaudit and need no root. Every other corpus is read from
    its root in its published layout (one root per non-demo corpus, in order)
    and its audio is run through openSMILE, with an on-disk cache.
    ``n_frames`` sets the frames per utterance of a frame-level set (``mfcc-frames``).
    """
    from fedaudit.data.demo import DEMO_CORPORA, DEMO_FEATURE_SETS, load_demo
    from fedaudit.data.features import extract_features
    from fedaudit.data.loaders import load_corpus

    if not corpora:
        raise CorpusError("No corpus given; name at least one, e.g. --corpus demo-private.")
    root_of = _roots_of(corpora, roots)
    tables = []
    for name in corpora:
        if name in DEMO_CORPORA:
            if feature_set not in DEMO_FEATURE_SETS:
                raise CorpusError(
                    f"The demo corpus {name!r} ships the feature sets {list(DEMO_FEATURE_SETS)}; got {feature_set!r}. "
                    "Synthesise its audio with `fedaudit corpus synth` to extract other features."
                )
            tables.append(load_demo(name, feature_set=feature_set, n_frames=n_frames))
        else:
            utterances = load_corpus(name, root_of[name])
            tables.append(
                extract_features(utterances, feature_set=feature_set, cache_dir=cache_dir, n_jobs=n_jobs,
                                 progress=progress, n_frames=n_frames)
            )
    return FeatureTable.concat(tables)


def count_speakers(corpora: Sequence[str], *, roots: Sequence[str | os.PathLike[str]] = ()) -> int:
    """Speakers of one or more corpora, read from their listings (no audio is decoded, no feature extracted).

    Roots follow :func:`load_features`: one per non-demo corpus, in order. Speakers are counted by
    ``speaker_id``, as the combined feature table and its client split see them.
    """
    from fedaudit.data.demo import DEMO_CORPORA, load_demo
    from fedaudit.data.loaders import load_corpus

    root_of = _roots_of(corpora, roots)
    speakers: set[str] = set()
    for name in corpora:
        ids = load_demo(name).speakers if name in DEMO_CORPORA else load_corpus(name, root_of[name])["speaker_id"]
        speakers.update(str(i) for i in ids)
    return len(speakers)


def _roots_of(corpora: Sequence[str], roots: Sequence[str | os.PathLike[str]]) -> dict[str, Path]:
    """The root of each non-demo corpus, after checking every name is known and each has one root."""
    from fedaudit.data.demo import DEMO_CORPORA
    from fedaudit.data.loaders import LOADERS

    real = [c for c in corpora if c not in DEMO_CORPORA]
    for name in real:
        if name not in LOADERS:
            raise CorpusError(
                f"Unknown corpus {name!r}; choose one of {sorted([*DEMO_CORPORA, *LOADERS])}."
            )
    if len(roots) != len(real):
        raise CorpusError(
            f"Give one --data-root per non-demo corpus: {len(real)} corpora ({real}) but {len(roots)} roots."
        )
    return dict(zip(real, [Path(r) for r in roots], strict=True))

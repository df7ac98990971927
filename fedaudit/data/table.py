"""The two tables the data layer produces: utterance lists and feature tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fedaudit.exceptions import CorpusError
from fedaudit.types import EMOTIONS, GENDERS

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CORPUS_COLUMNS",
    "EMOTIONS",
    "FeatureTable",
    "GENDERS",
    "check_corpus_table",
]

#: Columns of a corpus table: one row per utterance.
CORPUS_COLUMNS: tuple[str, ...] = ("utterance_id", "path", "speaker_id", "gender", "emotion", "corpus")



def check_corpus_table(table: pd.DataFrame, *, name: str) -> pd.DataFrame:
    """Check a corpus table has the expected columns and valid genders."""
    missing = [c for c in CORPUS_COLUMNS if c not in table.columns]
    if missing:
        raise CorpusError(f"Corpus table {name!r} lacks the columns {missing}; expected {list(CORPUS_COLUMNS)}.")
    bad = sorted(set(table["gender"]) - set(GENDERS))
    if bad:
        raise CorpusError(f"Corpus {name!r} has gender codes {bad}; expected 'F' or 'M'.")
    return table


@dataclass(frozen=True, kw_only=True, eq=False)
class FeatureTable:
    """Features of a set of utterances with their metadata, aligned by row.

    Parameters
    ----------
    x
        Features, shape ``(n_utterances, n_features)``, float32.
    utterance_id, speaker_id, gender, emotion, corpus
        One string per row. ``gender`` is ``"F"`` or ``"M"``.
    feature_set
        Name of the feature set (``"emobase"``, ``"egemaps"``, ``"compare"``, ``"mfcc"``).
    feature_names
        One name per column of ``x``.
    """

    x: np.ndarray
    utterance_id: np.ndarray
    speaker_id: np.ndarray
    gender: np.ndarray
    emotion: np.ndarray
    corpus: np.ndarray
    feature_set: str
    feature_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        for name in ("utterance_id", "speaker_id", "gender", "emotion", "corpus"):
            if len(getattr(self, name)) != n:
                raise CorpusError(
                    f"FeatureTable column {name!r} has {len(getattr(self, name))} rows, but x has {n}."
                )
        if self.x.ndim != 2:
            raise CorpusError(f"FeatureTable x must be 2-D (utterances x features); got shape {self.x.shape}.")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x.shape[1])

    @property
    def speakers(self) -> list[str]:
        """Speaker ids in first-seen order."""
        return list(dict.fromkeys(self.speaker_id.tolist()))

    def subset(self, mask_or_index: np.ndarray) -> FeatureTable:
        """Rows selected by a boolean mask or an index array."""
        sel = np.asarray(mask_or_index)
        return FeatureTable(
            x=self.x[sel],
            utterance_id=self.utterance_id[sel],
            speaker_id=self.speaker_id[sel],
            gender=self.gender[sel],
            emotion=self.emotion[sel],
            corpus=self.corpus[sel],
            feature_set=self.feature_set,
            feature_names=self.feature_names,
        )

    def with_x(self, x: np.ndarray) -> FeatureTable:
        """A copy with other features (same rows)."""
        return FeatureTable(
            x=np.asarray(x, dtype=np.float32),
            utterance_id=self.utterance_id,
            speaker_id=self.speaker_id,
            gender=self.gender,
            emotion=self.emotion,
            corpus=self.corpus,
            feature_set=self.feature_set,
            feature_names=self.feature_names,
        )

    @staticmethod
    def concat(tables: list[FeatureTable]) -> FeatureTable:
        """Stack tables of the same feature set."""
        if not tables:
            raise CorpusError("Cannot concatenate an empty list of feature tables.")
        sets = {t.feature_set for t in tables}
        if len(sets) != 1:
            raise CorpusError(f"Cannot combine feature tables of different feature sets: {sorted(sets)}.")
        dims = {t.n_features for t in tables}
        if len(dims) != 1:
            raise CorpusError(f"Cannot combine feature tables of different widths: {sorted(dims)}.")
        return FeatureTable(
            x=np.concatenate([t.x for t in tables]),
            utterance_id=np.concatenate([t.utterance_id for t in tables]),
            speaker_id=np.concatenate([t.speaker_id for t in tables]),
            gender=np.concatenate([t.gender for t in tables]),
            emotion=np.concatenate([t.emotion for t in tables]),
            corpus=np.concatenate([t.corpus for t in tables]),
            feature_set=tables[0].feature_set,
            feature_names=tables[0].feature_names,
        )

    def save(self, path: str, *, compress_x: bool = True) -> None:
        """Write to a compressed ``.npz`` (no pickles: strings are stored as unicode arrays)."""
        x = self.x.astype(np.float64)
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std[std == 0] = 1.0
        payload = dict(
            utterance_id=self.utterance_id.astype(str),
            speaker_id=self.speaker_id.astype(str),
            gender=self.gender.astype(str),
            emotion=self.emotion.astype(str),
            corpus=self.corpus.astype(str),
            feature_set=np.array(self.feature_set),
            feature_names=np.array(self.feature_names, dtype=str),
        )
        if compress_x:
            # float16 of standardised values: relative error ~5e-4 of a feature's std.
            payload.update(x_z16=((x - mean) / std).astype(np.float16), x_mean=mean, x_std=std)
        else:
            payload.update(x=self.x.astype(np.float32))
        np.savez_compressed(path, **payload)

    @classmethod
    def load(cls, path: str) -> FeatureTable:
        """Read a table written by :meth:`save` (``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as z:
            if "x" in z:
                x = z["x"].astype(np.float32)
            else:
                x = (z["x_z16"].astype(np.float64) * z["x_std"] + z["x_mean"]).astype(np.float32)
            return cls(
                x=x,
                utterance_id=z["utterance_id"],
                speaker_id=z["speaker_id"],
                gender=z["gender"],
                emotion=z["emotion"],
                corpus=z["corpus"],
                feature_set=str(z["feature_set"]),
                feature_names=tuple(z["feature_names"].tolist()),
            )

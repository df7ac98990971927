"""The two tables the data layer produces: utterance lists and feature tables."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
        Name of the feature set (``"emobase"``, ``"egemaps"``, ``"compare"``, ``"mfcc"``,
        ``"mfcc-frames"``).
    feature_names
        One name per column of ``x``.
    frame_shape
        ``(T, C)`` for a frame-level table: each row of ``x`` is ``T`` frames of
        ``C`` values flattened frame-major (``x[i].reshape(T, C)[t]`` is frame
        ``t``); ``None`` for utterance-level features.
    lengths
        Frame-level tables only: valid frames of each row (int, ``1..T``).
        Frames ``t >= lengths[i]`` are padding and all zero.
    """

    x: np.ndarray
    utterance_id: np.ndarray
    speaker_id: np.ndarray
    gender: np.ndarray
    emotion: np.ndarray
    corpus: np.ndarray
    feature_set: str
    feature_names: tuple[str, ...] = field(default=())
    frame_shape: tuple[int, int] | None = None
    lengths: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        for name in ("utterance_id", "speaker_id", "gender", "emotion", "corpus"):
            if len(getattr(self, name)) != n:
                raise CorpusError(
                    f"FeatureTable column {name!r} has {len(getattr(self, name))} rows, but x has {n}."
                )
        if self.x.ndim != 2:
            raise CorpusError(f"FeatureTable x must be 2-D (utterances x features); got shape {self.x.shape}.")
        self._check_frames()

    def _check_frames(self) -> None:
        if self.frame_shape is None:
            if self.lengths is not None:
                raise CorpusError("FeatureTable has frame lengths but no frame_shape; give both or neither.")
            return
        shape = tuple(int(d) for d in self.frame_shape)
        if len(shape) != 2 or min(shape) < 1:
            raise CorpusError(f"FeatureTable frame_shape must be (frames, values per frame) >= 1; got {self.frame_shape}.")
        object.__setattr__(self, "frame_shape", shape)
        t, c = shape
        if self.x.shape[1] != t * c:
            raise CorpusError(
                f"FeatureTable x has {self.x.shape[1]} columns, but frame_shape {shape} needs {t * c} ({t} x {c})."
            )
        if self.lengths is None or len(self.lengths) != self.x.shape[0]:
            got = None if self.lengths is None else len(self.lengths)
            raise CorpusError(f"A frame-level FeatureTable needs one length per row ({self.x.shape[0]}); got {got}.")
        lengths = np.asarray(self.lengths, dtype=np.int64)
        if len(lengths) and (lengths.min() < 1 or lengths.max() > t):
            raise CorpusError(
                f"FeatureTable lengths must be in [1, {t}] (the frames of frame_shape); "
                f"got {int(lengths.min())}..{int(lengths.max())}."
            )
        object.__setattr__(self, "lengths", lengths)
        if np.any(self.x.reshape(-1, t, c)[~self.frame_mask()]):
            raise CorpusError(
                "FeatureTable padding frames (t >= lengths) must be all zero; pad with fedaudit.data.features.pad_frames."
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_features(self) -> int:
        """Columns of ``x`` (``T * C`` for a frame-level table)."""
        return int(self.x.shape[1])

    def frame_mask(self) -> np.ndarray:
        """Frame-level tables: boolean ``(n_utterances, T)``, True for the valid frames."""
        if self.frame_shape is None or self.lengths is None:
            raise CorpusError(f"The {self.feature_set!r} table is utterance-level; it has no frames.")
        return np.arange(self.frame_shape[0])[None, :] < self.lengths[:, None]

    def frames(self) -> np.ndarray:
        """Frame-level tables: ``x`` as ``(n_utterances, T, C)`` (a view)."""
        if self.frame_shape is None:
            raise CorpusError(f"The {self.feature_set!r} table is utterance-level; it has no frames.")
        return self.x.reshape(-1, *self.frame_shape)

    def with_frames(self, n_frames: int) -> FeatureTable:
        """Frame-level tables: a copy padded with zero frames or truncated to ``n_frames`` frames."""
        frames = self.frames()
        t, c = self.frame_shape  # type: ignore[misc]
        n_frames = int(n_frames)
        if n_frames < 1:
            raise CorpusError(f"A frame table needs at least 1 frame per utterance; got n_frames={n_frames}.")
        out = np.zeros((len(self), n_frames, c), dtype=np.float32)
        keep = min(t, n_frames)
        out[:, :keep] = frames[:, :keep]
        per_frame = tuple(n.split("_", 1)[-1] for n in self.feature_names[:c])
        width = max(3, len(str(n_frames - 1)))
        names = tuple(f"t{i:0{width}d}_{n}" for i in range(n_frames) for n in per_frame) if self.feature_names else ()
        return replace(self, x=out.reshape(len(self), -1), feature_names=names, frame_shape=(n_frames, c),
                       lengths=np.minimum(self.lengths, n_frames))  # type: ignore[arg-type]

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
            frame_shape=self.frame_shape,
            lengths=None if self.lengths is None else self.lengths[sel],
        )

    def with_x(self, x: np.ndarray) -> FeatureTable:
        """A copy with other features (same rows, same frame shape and lengths)."""
        return FeatureTable(
            x=np.asarray(x, dtype=np.float32),
            utterance_id=self.utterance_id,
            speaker_id=self.speaker_id,
            gender=self.gender,
            emotion=self.emotion,
            corpus=self.corpus,
            feature_set=self.feature_set,
            feature_names=self.feature_names,
            frame_shape=self.frame_shape,
            lengths=self.lengths,
        )

    @staticmethod
    def concat(tables: list[FeatureTable]) -> FeatureTable:
        """Stack tables of the same feature set."""
        if not tables:
            raise CorpusError("Cannot concatenate an empty list of feature tables.")
        sets = {t.feature_set for t in tables}
        if len(sets) != 1:
            raise CorpusError(f"Cannot combine feature tables of different feature sets: {sorted(sets)}.")
        shapes = {t.frame_shape for t in tables}
        if len(shapes) != 1:
            raise CorpusError(
                f"Cannot combine frame tables of different frame shapes: {sorted(map(str, shapes))}; "
                "pad them to one number of frames (FeatureTable.with_frames)."
            )
        dims = {t.n_features for t in tables}
        if len(dims) != 1:
            raise CorpusError(f"Cannot combine feature tables of different widths: {sorted(dims)}.")
        frame_shape = tables[0].frame_shape
        return FeatureTable(
            x=np.concatenate([t.x for t in tables]),
            utterance_id=np.concatenate([t.utterance_id for t in tables]),
            speaker_id=np.concatenate([t.speaker_id for t in tables]),
            gender=np.concatenate([t.gender for t in tables]),
            emotion=np.concatenate([t.emotion for t in tables]),
            corpus=np.concatenate([t.corpus for t in tables]),
            feature_set=tables[0].feature_set,
            feature_names=tables[0].feature_names,
            frame_shape=frame_shape,
            lengths=None if frame_shape is None else np.concatenate([t.lengths for t in tables]),  # type: ignore[misc]
        )

    def save(self, path: str, *, compress_x: bool = True) -> None:
        """Write to a compressed ``.npz`` (no pickles: strings are stored as unicode arrays).

        With ``compress_x``, features are stored as float16 standardised values
        (per column; per value of a frame over the valid frames for frame
        tables, whose padding stays exactly zero when read back).
        """
        x = self.x.astype(np.float64)
        if self.frame_shape is not None:
            x = x.reshape(len(self), *self.frame_shape)
            valid = x[self.frame_mask()]
            mean, std = valid.mean(axis=0), valid.std(axis=0)
        else:
            mean, std = x.mean(axis=0), x.std(axis=0)
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
        if self.frame_shape is not None:
            payload.update(frame_shape=np.array(self.frame_shape, dtype=np.int64), lengths=self.lengths)
        if compress_x:
            # float16 of standardised values: relative error ~5e-4 of a feature's std.
            z = (x - mean) / std
            if self.frame_shape is not None:
                z = np.where(self.frame_mask()[:, :, None], z, 0.0).reshape(len(self), -1)
            payload.update(x_z16=z.astype(np.float16), x_mean=mean, x_std=std)
        else:
            payload.update(x=self.x.astype(np.float32))
        np.savez_compressed(path, **payload)

    @classmethod
    def load(cls, path: str) -> FeatureTable:
        """Read a table written by :meth:`save` (``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as z:
            frame_shape = tuple(int(d) for d in z["frame_shape"]) if "frame_shape" in z else None
            lengths = z["lengths"].astype(np.int64) if "lengths" in z else None
            if "x" in z:
                x = z["x"].astype(np.float32)
            elif frame_shape is not None and lengths is not None:
                n = len(z["x_z16"])
                frames = z["x_z16"].astype(np.float64).reshape(n, *frame_shape) * z["x_std"] + z["x_mean"]
                valid = np.arange(frame_shape[0])[None, :] < lengths[:, None]
                x = np.where(valid[:, :, None], frames, 0.0).reshape(n, -1).astype(np.float32)
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
                frame_shape=frame_shape,  # type: ignore[arg-type]
                lengths=lengths,
            )

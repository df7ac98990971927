"""Feature normalisation, a recorded setting of every run.

``"speaker"`` z-normalises each speaker with its own statistics (the
publication's choice, equivalent to each client normalising its own data);
``"global"`` standardises with statistics of the training clients only;
``"none"`` leaves features as extracted.

Frame-level tables (``mfcc-frames``) are normalised per value of a frame (per
MFCC coefficient): the statistics are taken over the valid frames only, and
only valid frames are changed, so padding frames stay all zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedaudit.config import NORMALIZATIONS
from fedaudit.data.table import FeatureTable
from fedaudit.exceptions import InvalidParameterError

__all__ = ["normalize_features", "speaker_znorm", "standardize"]

_EPS = 1e-8


def standardize(x: np.ndarray, *, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` with constant features mapped to 0."""
    safe = np.where(std > _EPS, std, 1.0)
    return ((x - mean) / safe).astype(np.float32)


def speaker_znorm(x: np.ndarray, speaker_id: Sequence[str] | np.ndarray) -> np.ndarray:
    """Z-normalise the rows of each speaker with that speaker's mean and std."""
    speaker_id = np.asarray(speaker_id)
    out = np.empty(x.shape, dtype=np.float32)
    for spk in np.unique(speaker_id):
        rows = speaker_id == spk
        xs = x[rows].astype(np.float64)
        out[rows] = standardize(xs, mean=xs.mean(axis=0), std=xs.std(axis=0))
    return out


def _frame_stats(frames: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each value of a frame over the valid frames, float64 ``(C,)`` each."""
    v = frames[valid].astype(np.float64)
    return v.mean(axis=0), v.std(axis=0)


def _normalize_frames(table: FeatureTable, method: str, train_mask: np.ndarray | None) -> FeatureTable:
    frames = table.frames().astype(np.float64)
    valid = table.frame_mask()
    out = np.zeros(frames.shape, dtype=np.float32)
    if method == "speaker":
        for spk in np.unique(table.speaker_id):
            rows = table.speaker_id == spk
            mean, std = _frame_stats(frames[rows], valid[rows])
            out[rows] = standardize(frames[rows], mean=mean, std=std)
    else:
        mean, std = _frame_stats(frames[train_mask], valid[train_mask])
        out[:] = standardize(frames, mean=mean, std=std)
    out[~valid] = 0.0
    return table.with_x(out.reshape(len(table), -1))


def normalize_features(
    table: FeatureTable, *, method: str, train_mask: np.ndarray | None = None
) -> FeatureTable:
    """Normalise a feature table.

    Parameters
    ----------
    table
        Features of every utterance of the run (training and held-out);
        frame-level tables are normalised per value of a frame over valid frames.
    method
        ``"none"``, ``"global"`` or ``"speaker"``.
    train_mask
        Rows whose statistics define ``"global"`` standardisation (the
        training clients); required for ``"global"``.

    Returns
    -------
    FeatureTable
        Same rows, normalised features.
    """
    if method not in NORMALIZATIONS:
        raise InvalidParameterError(
            f"Unknown normalisation {method!r}; choose one of {list(NORMALIZATIONS)}."
        )
    if method == "none":
        return table.with_x(table.x)
    if method == "global" and (train_mask is None or not np.any(train_mask)):
        raise InvalidParameterError("Global standardisation needs a non-empty mask of training rows.")
    if table.frame_shape is not None:
        return _normalize_frames(table, method, train_mask)
    if method == "speaker":
        return table.with_x(speaker_znorm(table.x, table.speaker_id))
    xt = table.x[train_mask].astype(np.float64)
    return table.with_x(standardize(table.x.astype(np.float64), mean=xt.mean(axis=0), std=xt.std(axis=0)))

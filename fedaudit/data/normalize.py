"""Feature normalisation, a recorded setting of every run.

``"speaker"`` z-normalises each speaker with its own statistics (the
publication's choice, equivalent to each client normalising its own data);
``"global"`` standardises with statistics of the training clients only;
``"none"`` leaves features as extracted.
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


def normalize_features(
    table: FeatureTable, *, method: str, train_mask: np.ndarray | None = None
) -> FeatureTable:
    """Normalise a feature table.

    Parameters
    ----------
    table
        Features of every utterance of the run (training and held-out).
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
    if method == "speaker":
        return table.with_x(speaker_znorm(table.x, table.speaker_id))
    if train_mask is None or not np.any(train_mask):
        raise InvalidParameterError("Global standardisation needs a non-empty mask of training rows.")
    xt = table.x[train_mask].astype(np.float64)
    return table.with_x(standardize(table.x.astype(np.float64), mean=xt.mean(axis=0), std=xt.std(axis=0)))

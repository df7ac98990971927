"""Plain classification scores shared by the simulator and the attacks."""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "uar"]


def uar(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted average recall: mean over the classes present in ``y_true`` of their recall.

    Examples
    --------
    >>> uar(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]))
    0.5
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.size == 0:
        return float("nan")
    recalls = [float(np.mean(y_pred[y_true == c] == c)) for c in np.unique(y_true)]
    return float(np.mean(recalls))


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of correct predictions."""
    y_true = np.asarray(y_true)
    if y_true.size == 0:
        return float("nan")
    return float(np.mean(y_true == np.asarray(y_pred)))

"""Plain classification scores shared by the simulator and the attacks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["accuracy", "class_scores", "macro_f1", "uar"]


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


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over the classes present in ``y_true`` of their F1 score, ``2 TP / (2 TP + FP + FN)``.

    The same value as scikit-learn's ``f1_score(average="macro", labels=<classes of y_true>)``,
    computed with numpy in microseconds (the simulator scores every round).

    Examples
    --------
    >>> round(macro_f1(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])), 4)
    0.7333
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.size == 0:
        return float("nan")
    scores = []
    for c in np.unique(y_true):
        truth, pred = y_true == c, y_pred == c
        tp = float(np.sum(truth & pred))
        scores.append(2.0 * tp / (float(np.sum(truth)) + float(np.sum(pred))))
    return float(np.mean(scores))


def class_scores(
    y_true: np.ndarray, y_pred: np.ndarray, *, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Accuracy, UAR, and precision, recall and F1 per class and macro-averaged (scikit-learn).

    Classes absent from ``y_true`` are left out of the macro averages, so the
    macro recall equals :func:`uar`; a class with no prediction has precision 0
    (scikit-learn's ``zero_division=0``), never NaN.

    Parameters
    ----------
    y_true, y_pred
        Integer class labels.
    class_names
        Name of class ``k`` at position ``k`` (e.g. the emotions); classes
        are keyed by their index as a string without it.

    Returns
    -------
    dict
        ``{"n": ..., "accuracy": ..., "uar": ..., "precision_macro": ..., "recall_macro": ...,
        "f1_macro": ..., "per_class": {name: {"precision", "recall", "f1", "support"}}}``,
        JSON-ready; ``per_class`` lists the classes present in ``y_true`` or ``y_pred``.

    Examples
    --------
    >>> s = class_scores(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]), class_names=["sad", "happy"])
    >>> round(s["per_class"]["sad"]["precision"], 4), s["per_class"]["happy"]["recall"]
    (0.6667, 0.5)
    """
    from sklearn.metrics import precision_recall_fscore_support

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.size == 0:
        nan = float("nan")
        return {"n": 0, "accuracy": nan, "uar": nan, "precision_macro": nan, "recall_macro": nan,
                "f1_macro": nan, "per_class": {}}
    present = np.unique(y_true)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=present, average="macro", zero_division=0)
    listed = np.union1d(present, np.unique(y_pred))
    pc, rc, fc, sc = precision_recall_fscore_support(y_true, y_pred, labels=listed, average=None, zero_division=0)

    def name(k: int) -> str:
        return str(class_names[k]) if class_names is not None and 0 <= k < len(class_names) else str(k)

    return {
        "n": int(y_true.size),
        "accuracy": accuracy(y_true, y_pred),
        "uar": uar(y_true, y_pred),
        "precision_macro": float(p),
        "recall_macro": float(r),
        "f1_macro": float(f),
        "per_class": {
            name(int(k)): {"precision": float(pc[i]), "recall": float(rc[i]), "f1": float(fc[i]), "support": int(sc[i])}
            for i, k in enumerate(listed)
        },
    }

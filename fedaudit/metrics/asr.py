"""Attack success rate (ASR) and the scores reported with it.

ASR as defined by Feng et al. (Interspeech 2022): for each client, draw one of
its updates at random from the whole run and predict its gender; repeat 10
times; the client scores the fraction of correct predictions; ASR is the mean
over clients. With ``n_updates > 1`` the attacker averages ``n`` randomly drawn
updates of the client before predicting (the "multiple updates" attack).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fedaudit.types import GENDERS
from fedaudit.exceptions import InvalidParameterError

__all__ = [
    "AttackResult",
    "ClientPrediction",
    "attack_success",
    "averaged_draws",
    "best_threshold",
    "predict_clients",
    "row_probabilities",
]

#: Predicts ``(n, 2)`` probabilities of ("F", "M") from ``{param: (n, ...)}`` arrays.
Predictor = Callable[[Mapping[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True, kw_only=True)
class ClientPrediction:
    """What the attack says about one client."""

    client_id: int
    n_updates: int
    predicted: str
    p_female: float
    truth: str | None = None
    score: float | None = None  # fraction of correct draws (with ground truth)


@dataclass(frozen=True, kw_only=True)
class AttackResult:
    """ASR and companions for one attack on one recording."""

    asr: float
    uar: float
    auc: float
    chance: float
    ci_low: float
    ci_high: float
    n_clients: int
    repeats: int
    n_updates: int | str
    threshold: float = 0.5  # P("M") above which the attack says "M" (calibrated for averaged updates)
    clients: list[ClientPrediction] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def row_probabilities(
    predict: Predictor, store: Any, params: Sequence[str], *, rows: np.ndarray | None = None, batch: int = 256
) -> np.ndarray:
    """P("F", "M") for every committed update row (or ``rows``), read in contiguous blocks."""
    rows = np.arange(store.n_updates) if rows is None else np.asarray(rows)
    out = np.empty((len(rows), 2), dtype=np.float64)
    buffers: dict[str, np.ndarray | None] = {p: None for p in params}
    for start in range(0, len(rows), batch):
        sel = rows[start : start + batch]
        for p in params:  # reused buffers: no fresh memory to page in for every block
            buffers[p] = store.param(p, sel, out=buffers[p])
        out[start : start + len(sel)] = predict({p: buffers[p][: len(sel)] for p in params})
    return out


def _roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, score))


def attack_success(
    predict: Predictor,
    store: Any,
    params: Sequence[str],
    *,
    repeats: int = 10,
    n_updates: int | str = 1,
    seed: int = 0,
    n_bootstrap: int = 1000,
    row_proba: np.ndarray | None = None,
    threshold: float = 0.5,
) -> AttackResult:
    """Score an attack on a recording with ground truth.

    Parameters
    ----------
    predict
        The attack's ``predict_proba``.
    store
        The target :class:`~fedaudit.record.UpdateStore`.
    params
        Parameter names the attack reads.
    repeats
        Draws per client.
    n_updates
        Updates averaged per draw: an integer, or ``"all"`` (one draw of every update).
    seed
        Seed of the draws and of the bootstrap.
    n_bootstrap
        Resamples of clients for the 95% confidence interval of the ASR.
    row_proba
        Precomputed probabilities of every row (for ``n_updates=1``), to avoid predicting twice.
    threshold
        The attack says "M" when P("M") exceeds it. 0.5 suits the classifier's
        own training distribution (single updates); for averaged updates, set
        it on averaged shadow updates (:func:`averaged_draws` and
        :func:`best_threshold`), since averaging shifts the scores.
    """
    if repeats < 1:
        raise InvalidParameterError(f"repeats must be >= 1. Got {repeats!r}.")
    if n_updates != "all" and (not isinstance(n_updates, (int, np.integer)) or n_updates < 1):
        raise InvalidParameterError(f"n_updates must be an integer >= 1 or 'all'. Got {n_updates!r}.")
    truth = store.ground_truth()["gender"]  # evaluation only: scoring
    rng = np.random.default_rng(seed)
    if n_updates == 1 and row_proba is None:
        row_proba = row_probabilities(predict, store, params)

    clients: list[ClientPrediction] = []
    draw_y, draw_p = [], []
    for position, cid in enumerate(store.client_ids.tolist()):
        rows = store.client_rows(cid)
        if len(rows) == 0:
            continue
        y = GENDERS.index(str(truth[position]))
        if n_updates == 1:
            picks = rng.integers(0, len(rows), size=repeats)
            p = row_proba[rows[picks]]
        elif n_updates == "all":
            data = {name: store.param(name, rows).astype(np.float64).mean(axis=0, keepdims=True) for name in params}
            p = np.repeat(predict(data), repeats, axis=0)
        else:
            k = min(int(n_updates), len(rows))
            draws = np.stack([rng.choice(len(rows), size=k, replace=False) for _ in range(repeats)])
            arrays = {name: store.param(name, rows) for name in params}
            data = {name: a[draws].astype(np.float64).mean(axis=1) for name, a in arrays.items()}
            p = predict(data)
        pred = (p[:, 1] > threshold).astype(int)
        score = float(np.mean(pred == y))
        p_f = float(p[:, 0].mean())
        clients.append(ClientPrediction(
            client_id=int(cid), n_updates=len(rows), predicted=GENDERS[int(1.0 - p_f > threshold)], p_female=p_f,
            truth=GENDERS[y], score=score,
        ))
        draw_y.extend([y] * len(p))
        draw_p.extend(p[:, 1].tolist())
    if not clients:
        raise InvalidParameterError(f"{store.path} holds no client updates to attack.")
    scores = np.array([c.score for c in clients])
    labels = np.array([GENDERS.index(c.truth) for c in clients])
    asr = float(scores.mean())
    uar = float(np.mean([scores[labels == g].mean() for g in np.unique(labels)]))
    chance = float(max(np.mean(labels == 0), np.mean(labels == 1)))
    boot_rng = np.random.default_rng([seed, 7])
    boot = scores[boot_rng.integers(0, len(scores), size=(n_bootstrap, len(scores)))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return AttackResult(
        asr=asr, uar=uar, auc=_roc_auc(np.array(draw_y), np.array(draw_p)), chance=chance,
        ci_low=float(lo), ci_high=float(hi), n_clients=len(clients), repeats=repeats, n_updates=n_updates,
        threshold=float(threshold), clients=clients,
    )


def averaged_draws(
    predict: Predictor, store: Any, params: Sequence[str], *, n_updates: int | str, repeats: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """P("M") of ``repeats`` draws of ``n_updates`` averaged updates per client, and each draw's gender (0 = F).

    The same draws as :func:`attack_success` makes, on a recording whose ground truth the
    caller owns (a shadow run), to calibrate the decision threshold for averaged updates.
    """
    truth = store.ground_truth()["gender"]
    rng = np.random.default_rng(seed)
    scores, labels = [], []
    for position, cid in enumerate(store.client_ids.tolist()):
        rows = store.client_rows(cid)
        if len(rows) == 0:
            continue
        arrays = {name: store.param(name, rows).astype(np.float64) for name in params}
        if n_updates == "all":
            data = {name: a.mean(axis=0, keepdims=True) for name, a in arrays.items()}
        else:
            k = min(int(n_updates), len(rows))
            draws = np.stack([rng.choice(len(rows), size=k, replace=False) for _ in range(repeats)])
            data = {name: a[draws].mean(axis=1) for name, a in arrays.items()}
        p_m = predict(data)[:, 1]
        scores.append(p_m)
        labels.append(np.full(len(p_m), GENDERS.index(str(truth[position]))))
    if not scores:
        return np.empty(0), np.empty(0, dtype=int)
    return np.concatenate(scores), np.concatenate(labels)


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold on P("M") with the highest unweighted average recall on ``(scores, labels)``.

    Candidates are the midpoints between sorted distinct scores (and 0.5); ties go to the
    candidate nearest 0.5. With one gender only, 0.5.
    """
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    if scores.size == 0 or len(np.unique(labels)) < 2:
        return 0.5
    distinct = np.unique(scores)
    candidates = np.unique(np.r_[0.5, (distinct[1:] + distinct[:-1]) / 2])
    pred = scores[None, :] > candidates[:, None]
    recall_m = (pred & (labels == 1)).sum(axis=1) / max(1, int((labels == 1).sum()))
    recall_f = (~pred & (labels == 0)).sum(axis=1) / max(1, int((labels == 0).sum()))
    uar_at = (recall_m + recall_f) / 2
    best = np.flatnonzero(uar_at >= uar_at.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def predict_clients(
    predict: Predictor, store: Any, params: Sequence[str], *, row_proba: np.ndarray | None = None
) -> list[ClientPrediction]:
    """Per-client predicted gender and confidence, without ground truth (the real audit case).

    A client's confidence is the mean, over all its updates, of P(female).
    """
    if row_proba is None:
        row_proba = row_probabilities(predict, store, params)
    out = []
    for cid in store.client_ids.tolist():
        rows = store.client_rows(cid)
        if len(rows) == 0:
            continue
        p_f = float(row_proba[rows, 0].mean())
        out.append(ClientPrediction(client_id=int(cid), n_updates=len(rows), predicted=GENDERS[int(p_f < 0.5)], p_female=p_f))
    return out

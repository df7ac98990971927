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

__all__ = ["AttackResult", "ClientPrediction", "attack_success", "predict_clients", "row_probabilities"]

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
        pred = p.argmax(axis=1)
        score = float(np.mean(pred == y))
        p_f = float(p[:, 0].mean())
        clients.append(ClientPrediction(
            client_id=int(cid), n_updates=len(rows), predicted=GENDERS[int(p_f < 0.5)], p_female=p_f,
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
        clients=clients,
    )


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

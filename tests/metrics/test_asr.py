from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedaudit.exceptions import InvalidParameterError
from fedaudit.metrics import attack_success, predict_clients


class FakeStore:
    """Three clients; each update's 'x' value says which gender the fake attack predicts."""

    def __init__(self, values: dict[int, list[float]], genders: list[str]) -> None:
        self.path = Path("fake.h5")
        self.client_ids = np.array(sorted(values))
        rows, cids = [], []
        for cid in sorted(values):
            for v in values[cid]:
                rows.append(v)
                cids.append(cid)
        self._x = np.array(rows, dtype=np.float64)[:, None]
        self._cid = np.array(cids)
        self.n_updates = len(rows)
        self._genders = np.array(genders)

    def client_rows(self, cid: int) -> np.ndarray:
        return np.flatnonzero(self._cid == cid)

    def param(self, name: str, rows=None, *, out=None) -> np.ndarray:
        return self._x if rows is None else self._x[np.asarray(rows)]

    def ground_truth(self) -> dict[str, np.ndarray]:
        return {"gender": self._genders}


def predict(updates):  # P(M) = x
    p_m = np.clip(updates["x"][:, 0], 0, 1)
    return np.stack([1 - p_m, p_m], axis=1)


def test_asr_on_a_hand_made_case() -> None:
    # client 0 (F): always predicted F -> 1.0; client 1 (M): always M -> 1.0;
    # client 2 (M): one update says M, three say F -> expected score 0.25 over many draws.
    store = FakeStore({0: [0.1, 0.2], 1: [0.9], 2: [0.9, 0.1, 0.1, 0.1]}, ["F", "M", "M"])
    res = attack_success(predict, store, ["x"], repeats=4000, seed=0)
    assert res.n_clients == 3
    scores = {c.client_id: c.score for c in res.clients}
    assert scores[0] == 1.0 and scores[1] == 1.0
    assert abs(scores[2] - 0.25) < 0.03
    assert abs(res.asr - (1 + 1 + scores[2]) / 3) < 1e-12
    # UAR: mean over genders of the mean client score: F -> 1.0, M -> (1 + s2) / 2.
    assert abs(res.uar - (1.0 + (1 + scores[2]) / 2) / 2) < 1e-12
    assert res.chance == pytest.approx(2 / 3)
    assert res.ci_low <= res.asr <= res.ci_high


def test_ten_repeats_score_is_a_fraction_of_ten() -> None:
    store = FakeStore({0: [0.9, 0.1], 1: [0.8, 0.3, 0.7]}, ["F", "M"])
    res = attack_success(predict, store, ["x"], seed=3)
    for c in res.clients:
        assert c.score * 10 == pytest.approx(round(c.score * 10))


def test_multiple_updates_average_before_predicting() -> None:
    # Client 0 is M; its updates average to 0.6 (> 0.5), though most single updates say F.
    store = FakeStore({0: [0.4, 0.4, 0.4, 1.2]}, ["M"])
    single = attack_success(predict, store, ["x"], repeats=2000, seed=0)
    assert abs(single.asr - 0.25) < 0.03
    every = attack_success(predict, store, ["x"], n_updates="all", seed=0)
    assert every.asr == 1.0
    assert attack_success(predict, store, ["x"], n_updates=4, seed=0).asr == 1.0


def test_same_seed_same_result() -> None:
    store = FakeStore({0: [0.9, 0.1, 0.6], 1: [0.8, 0.3, 0.7]}, ["F", "M"])
    a = attack_success(predict, store, ["x"], seed=1)
    b = attack_success(predict, store, ["x"], seed=1)
    assert a.to_dict() == b.to_dict()


def test_predictions_without_ground_truth() -> None:
    store = FakeStore({0: [0.1, 0.3], 1: [0.9, 0.7]}, ["F", "M"])
    preds = predict_clients(predict, store, ["x"])
    assert [p.predicted for p in preds] == ["F", "M"]
    assert preds[0].p_female == pytest.approx(0.8) and preds[0].truth is None and preds[0].score is None


@pytest.mark.parametrize("kwargs", [{"repeats": 0}, {"n_updates": 0}, {"n_updates": "some"}])
def test_bad_arguments(kwargs) -> None:
    store = FakeStore({0: [0.1]}, ["F"])
    with pytest.raises(InvalidParameterError):
        attack_success(predict, store, ["x"], **kwargs)


def test_best_threshold_follows_scores_that_averaging_shifted() -> None:
    from fedaudit.metrics.asr import best_threshold

    # Every score above 0.5, yet the ranking is perfect: 0.5 would call everyone "M".
    scores = np.array([0.60, 0.65, 0.70, 0.80, 0.85, 0.90])
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert best_threshold(scores, labels) == pytest.approx(0.75)
    # Separable at 0.5 already: 0.5 is kept (the candidate nearest 0.5 among the best).
    assert best_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 0.5
    assert best_threshold(np.array([0.7, 0.8]), np.array([1, 1])) == 0.5  # one gender: nothing to learn
    assert best_threshold(np.array([]), np.array([], dtype=int)) == 0.5

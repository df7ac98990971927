"""Utility scores of a run: precision, recall and F1 per emotion and macro, beside UAR and accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from fedaudit.config import FLConfig
from fedaudit.fl import METRIC_NAMES, simulate
from fedaudit.metrics import class_scores, macro_f1, uar
from tests.conftest import make_table
from tests.models.frames import frame_table


def test_class_scores_of_a_hand_computed_case() -> None:
    truth = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    # class 0: TP 2, FP 0, FN 1 -> P 1, R 2/3, F1 0.8
    # class 1: TP 1, FP 1, FN 1 -> P 1/2, R 1/2, F1 1/2
    # class 2: TP 1, FP 1, FN 0 -> P 1/2, R 1, F1 2/3

    s = class_scores(truth, pred, class_names=["neutral", "happy", "sad", "angry"])

    assert s["n"] == 6 and s["accuracy"] == pytest.approx(4 / 6)
    assert s["per_class"]["neutral"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert s["per_class"]["happy"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert s["per_class"]["sad"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert "angry" not in s["per_class"]  # neither in the truth nor predicted
    assert s["precision_macro"] == pytest.approx(2 / 3)
    assert s["recall_macro"] == pytest.approx(13 / 18) == pytest.approx(s["uar"])
    assert s["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert macro_f1(truth, pred) == pytest.approx(s["f1_macro"])


def test_a_class_never_predicted_scores_zero_and_an_absent_class_stays_out_of_the_means() -> None:
    never = class_scores(np.array([0, 1]), np.array([0, 0]))
    assert never["per_class"]["1"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert never["f1_macro"] == pytest.approx((2 / 3 + 0.0) / 2)

    absent = class_scores(np.array([0, 0]), np.array([0, 3]))
    assert set(absent["per_class"]) == {"0", "3"} and absent["per_class"]["3"]["support"] == 0
    assert (absent["precision_macro"], absent["recall_macro"]) == (1.0, 0.5)
    assert np.isnan(class_scores(np.array([], int), np.array([], int))["f1_macro"])


def test_numpy_macro_f1_equals_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        truth, pred = rng.integers(0, 4, 50), rng.integers(0, 5, 50)
        want = f1_score(truth, pred, labels=np.unique(truth), average="macro", zero_division=0)
        assert macro_f1(truth, pred) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("frames", [False, True])
def test_run_summary_reports_the_best_rounds_test_scores(frames: bool) -> None:
    table = frame_table(n_speakers=6, per_speaker=8) if frames else make_table(n_speakers=6, per_speaker=8)
    config = FLConfig(algorithm="fedavg", rounds=4, client_fraction=0.5, batch_size=8, n_folds=3, lr=0.01,
                      model="lstm" if frames else "mlp", hidden=(8,), dropout=(0.0,), seed=1)

    result = simulate(config, table)
    summary = result.summary()

    assert "test_f1" in METRIC_NAMES
    best = result.history[result.best_round]
    assert summary["test_f1"] == pytest.approx(best.test_f1)
    assert summary["test_recall"] == pytest.approx(best.test_uar)
    assert summary["test_acc"] == pytest.approx(best.test_acc)
    assert sum(row["support"] for row in summary["test_per_class"].values()) == len(result.split.test_rows)
    assert set(summary["test_per_class"]) <= {"neutral", "happy", "sad", "angry"}
    assert all(0.0 <= h.test_f1 <= 1.0 for h in result.history)
    assert 0.0 <= summary["test_precision"] <= 1.0 and uar(np.array([0]), np.array([0])) == 1.0

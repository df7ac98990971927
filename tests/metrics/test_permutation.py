"""Kernels of the permutation test: relabellings, p-value, summary, verdict, jackknife."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedaudit.exceptions import InvalidParameterError
from fedaudit.metrics.permutation import (
    balanced_relabellings,
    count_balanced_relabellings,
    jackknife,
    permutation_p_value,
    significance,
)


def test_p_value_counts_ties_and_adds_one() -> None:
    assert permutation_p_value(0.8, [0.1, 0.2, 0.3]) == pytest.approx(1 / 4)
    assert permutation_p_value(0.8, [0.8, 0.9, 0.3]) == pytest.approx(3 / 4)  # a tie counts against
    assert permutation_p_value(0.0, [0.5] * 9) == 1.0
    with pytest.raises(InvalidParameterError, match="at least one null score"):
        permutation_p_value(0.5, [])


@pytest.mark.parametrize(("n_f", "n_m"), [(4, 4), (3, 5), (1, 5), (2, 2)])
def test_exhaustive_relabellings_are_gender_balanced_distinct_and_never_the_truth(n_f: int, n_m: int) -> None:
    genders = np.array(["F"] * n_f + ["M"] * n_m)
    labels, possible = balanced_relabellings(genders, n=10_000)
    assert len(labels) == possible == count_balanced_relabellings(genders) > 0
    assert len({lab.tobytes() for lab in labels}) == len(labels)
    for lab in labels:
        assert set(lab.tolist()) == {"F", "M"}
        assert not np.array_equal(lab, genders) and not np.array_equal(lab, np.where(genders == "F", "M", "F"))
        for g, n in (("F", n_f), ("M", n_m)):  # half of each gender's speakers takes label F
            assert np.sum(lab[genders == g] == "F") in (n // 2, n - n // 2)


def test_four_and_four_speakers_give_36_relabellings() -> None:
    assert count_balanced_relabellings(["F"] * 4 + ["M"] * 4) == math.comb(4, 2) ** 2
    assert count_balanced_relabellings(["F", "M"]) == 0


def test_many_speakers_are_sampled_distinct_and_reproducibly() -> None:
    genders = ["F"] * 10 + ["M"] * 10
    a, possible = balanced_relabellings(genders, n=20, seed=3)
    b, _ = balanced_relabellings(genders, n=20, seed=3)
    c, _ = balanced_relabellings(genders, n=20, seed=4)
    assert possible == math.comb(10, 5) ** 2 and len(a) == 20
    assert [x.tolist() for x in a] == [x.tolist() for x in b] != [x.tolist() for x in c]
    assert len({x.tobytes() for x in a}) == 20
    for lab in a:
        assert np.sum(lab[:10] == "F") == 5 and np.sum(lab[10:] == "F") == 5


def test_summary_and_verdicts() -> None:
    sig = significance(0.9, [0.4, 0.5, 0.6, 0.5] * 5, n_possible=100)
    assert sig.p_value == pytest.approx(1 / 21) and sig.significant and not sig.exhaustive
    assert sig.null_median == 0.5 and sig.above_null == pytest.approx(0.4)
    assert sig.null_p95 == pytest.approx(float(np.percentile([0.4, 0.5, 0.6, 0.5] * 5, 95)))
    assert sig.verdict() == "significant at p = 0.048 (N = 20 gender-free relabellings of the shadow speakers)"
    weak = significance(0.55, [0.4, 0.6, 0.7, 0.5, 0.3] * 4)
    assert weak.verdict() == "not distinguishable from an attacker with meaningless labels (p = 0.43)"
    assert weak.exhaustive
    assert set(sig.to_dict()) >= {"p_value", "n_permutations", "null_median", "null_p95", "above_null"}


def test_jackknife_matches_the_formula_and_stays_in_range() -> None:
    j = jackknife(0.9, [0.8, 0.85, 0.95, 1.0])
    loo = np.array([0.8, 0.85, 0.95, 1.0])
    assert j.se == pytest.approx(math.sqrt(3 / 4 * np.sum((loo - loo.mean()) ** 2)))
    assert 0.0 <= j.ci_low < 0.9 < j.ci_high == 1.0
    with pytest.raises(InvalidParameterError, match="at least 2 shadow runs"):
        jackknife(0.9, [0.9])

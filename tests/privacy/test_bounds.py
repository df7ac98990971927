"""Epsilon lower bounds and the GDP estimate, checked against computations made independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from fedaudit.defenses.accounting import gaussian_delta
from fedaudit.exceptions import InvalidParameterError
from fedaudit.privacy import (
    clopper_pearson_bound,
    clopper_pearson_interval,
    gdp_delta,
    gdp_epsilon,
    gdp_estimate,
    one_run_bound,
    one_run_bound_from_scores,
    one_run_p_value,
)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (37, 200)])
def test_clopper_pearson_interval_matches_scipy_exact_interval(k: int, n: int) -> None:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.9, method="exact")
    lo, hi = clopper_pearson_interval(k, n, 0.1)
    assert lo == pytest.approx(ci.low, abs=1e-12)
    assert hi == pytest.approx(ci.high, abs=1e-12)


def test_clopper_pearson_bound_at_a_fixed_threshold_is_the_direct_beta_computation() -> None:
    scores_in = np.array([0.9, 0.8, 0.7, 0.6, 0.4] * 20)  # 80 of 100 at or above 0.5
    scores_out = np.array([0.1, 0.2, 0.3, 0.4, 0.55] * 20)  # 20 of 100 at or above 0.5
    delta, confidence = 1e-5, 0.95
    a = (1 - confidence) / 2
    tpr_lo = stats.beta.ppf(a, 80, 100 - 80 + 1)
    fpr_hi = stats.beta.ppf(1 - a, 20 + 1, 100 - 20)
    tnr_lo = stats.beta.ppf(a, 80, 100 - 80 + 1)
    fnr_hi = stats.beta.ppf(1 - a, 20 + 1, 100 - 20)
    expected = max(math.log((tpr_lo - delta) / fpr_hi), math.log((tnr_lo - delta) / fnr_hi))
    got = clopper_pearson_bound(scores_in, scores_out, delta=delta, confidence=confidence, threshold=0.5)
    assert got.epsilon == pytest.approx(expected, rel=1e-9)
    assert (got.details["true_positives"], got.details["false_positives"]) == (80, 20)


def test_choosing_the_threshold_costs_confidence() -> None:
    rng = np.random.default_rng(0)
    s_in, s_out = rng.normal(2.0, 1.0, 300), rng.normal(0.0, 1.0, 300)
    searched = clopper_pearson_bound(s_in, s_out, delta=1e-5)
    assert searched.details["thresholds_tried"] == 600
    fixed = clopper_pearson_bound(s_in, s_out, delta=1e-5, threshold=searched.details["threshold"])
    assert 0 < searched.epsilon < fixed.epsilon  # Bonferroni over 600 thresholds lowers the bound


def test_clopper_pearson_bound_is_zero_without_signal() -> None:
    rng = np.random.default_rng(1)
    assert clopper_pearson_bound(rng.normal(size=500), rng.normal(size=500), delta=1e-5).epsilon < 0.3


def test_one_run_bound_with_every_guess_right_and_pure_dp_has_a_closed_form() -> None:
    # P[Binomial(r, q) >= r] = q^r = 0.05  =>  eps = log(q / (1 - q))
    q = 0.05 ** (1 / 100)
    assert one_run_bound(1000, 100, 100, delta=0.0).epsilon == pytest.approx(math.log(q / (1 - q)), abs=1e-5)


@pytest.mark.parametrize(("r", "v"), [(100, 80), (500, 300), (1000, 620)])
def test_one_run_bound_with_pure_dp_inverts_the_binomial_tail(r: int, v: int) -> None:
    def tail(eps: float) -> float:
        return stats.binom.sf(v - 1, r, math.exp(eps) / (1 + math.exp(eps))) - 0.05

    expected = optimize.brentq(tail, 0.0, 20.0, xtol=1e-10)
    assert one_run_bound(1000, r, v, delta=0.0).epsilon == pytest.approx(expected, abs=1e-5)


def test_one_run_p_value_with_delta_matches_a_plain_loop() -> None:
    m, r, v, eps, delta = 1000, 200, 150, 0.8, 1e-4
    q = math.exp(eps) / (1 + math.exp(eps))
    alpha, running = 0.0, 0.0
    for i in range(1, v + 1):
        running += stats.binom.pmf(v - i, r, q)
        alpha = max(alpha, running / i)
    expected = stats.binom.sf(v - 1, r, q) + 2 * m * delta * alpha
    assert one_run_p_value(m, r, v, eps, delta) == pytest.approx(expected, rel=1e-10)


def test_one_run_bound_shrinks_with_delta_and_grows_with_correct_guesses() -> None:
    pure = one_run_bound(1000, 200, 170, delta=0.0).epsilon
    approx = one_run_bound(1000, 200, 170, delta=1e-4).epsilon
    assert 0 < approx < pure
    assert one_run_bound(1000, 200, 180, delta=1e-4).epsilon > approx
    assert one_run_bound(1000, 200, 100, delta=1e-5).epsilon == 0.0  # chance level: nothing rejected


def test_one_run_bound_from_scores_counts_top_and_bottom_guesses() -> None:
    scores = np.arange(100, dtype=float)
    inserted = scores >= 50  # perfectly separated
    bound = one_run_bound_from_scores(scores, inserted, delta=0.0, guesses=[100])
    assert bound.details["correct"] == 100
    assert bound.epsilon == pytest.approx(one_run_bound(100, 100, 100, delta=0.0).epsilon)
    flipped = one_run_bound_from_scores(-scores, inserted, delta=0.0, guesses=[100])
    assert flipped.epsilon == 0.0


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0])
def test_gdp_epsilon_matches_the_gaussian_mechanism(mu: float) -> None:
    # mu-GDP is the Gaussian mechanism with sensitivity 1 and sigma 1/mu (Balle and Wang's exact delta).
    eps = gdp_epsilon(mu, 1e-5)
    assert gaussian_delta(1.0 / mu, eps) == pytest.approx(1e-5, rel=1e-6)
    assert gdp_delta(mu, eps) == pytest.approx(1e-5, rel=1e-8)


def test_gdp_epsilon_edge_cases() -> None:
    assert gdp_epsilon(0.0, 1e-5) == 0.0
    assert gdp_epsilon(1e-6, 0.5) == 0.0  # delta above the total variation: epsilon 0 suffices
    with pytest.raises(InvalidParameterError, match="mu"):
        gdp_epsilon(-1.0, 1e-5)


def test_gdp_estimate_recovers_mu_of_gaussian_scores() -> None:
    rng = np.random.default_rng(2)
    est = gdp_estimate(rng.normal(2.0, 1.0, 20000), rng.normal(0.0, 1.0, 20000), delta=1e-5)
    assert est.mu == pytest.approx(2.0, abs=0.05)
    assert est.epsilon == pytest.approx(gdp_epsilon(est.mu, 1e-5))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: one_run_bound(10, 20, 5, delta=1e-5), "v <= r <= m"),
        (lambda: one_run_bound(10, 5, 5, delta=1e-5, confidence=1.0), "confidence"),
        (lambda: clopper_pearson_bound([], [1.0], delta=1e-5), "scores"),
        (lambda: clopper_pearson_bound([np.nan], [1.0], delta=1e-5), "NaN"),
        (lambda: one_run_bound_from_scores([1.0, 2.0], [True], delta=1e-5), "one inserted flag"),
    ],
)
def test_bad_inputs_are_refused(call, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        call()


def test_gdp_epsilon_of_a_large_mu_does_not_overflow() -> None:
    eps = gdp_epsilon(60.0, 1e-5)
    assert eps > 1000  # about mu^2 / 2 + mu z for mu = 60
    assert gdp_delta(60.0, eps) == pytest.approx(1e-5, rel=1e-6)

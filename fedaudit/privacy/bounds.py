"""Empirical epsilon from membership guesses on canaries: lower bounds and a Gaussian-DP estimate.

Three ways to turn canary scores (higher = "this canary was inserted") into an
epsilon at the run's delta:

* :func:`clopper_pearson_bound`: the hypothesis-testing bound of Jagielski,
  Ullman and Oprea, "Auditing differentially private machine learning: how
  private is private SGD?" (NeurIPS 2020), with Clopper-Pearson intervals on
  the true and false positive rates.
* :func:`one_run_bound` and :func:`one_run_bound_from_scores`: the one-run
  bound of Steinke, Nasr and Jagielski, "Privacy auditing with one (1)
  training run" (NeurIPS 2023), from the number of correct guesses among
  the guesses made on canaries each inserted with probability 1/2.
* :func:`gdp_estimate`: the Gaussian-DP estimate of Andrew, Kairouz, Oh,
  Oprea, McMahan and Suriyakumar, "One-shot empirical privacy estimation for
  federated learning" (ICLR 2024; arXiv 2302.03098, 2023), with
  :func:`gdp_epsilon` converting mu-GDP to (epsilon, delta).

The first two are lower bounds that hold with the stated confidence whatever
the scores; the third is an estimate (no guarantee either way). All are pure
numpy/scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats

from fedaudit.exceptions import InvalidParameterError

__all__ = [
    "EpsilonBound",
    "GDPEstimate",
    "clopper_pearson_bound",
    "clopper_pearson_interval",
    "gdp_delta",
    "gdp_epsilon",
    "gdp_estimate",
    "one_run_bound",
    "one_run_bound_from_scores",
    "one_run_p_value",
]


@dataclass(frozen=True, kw_only=True)
class EpsilonBound:
    """An empirical lower bound on epsilon at ``delta``, holding with probability ``confidence``.

    ``details`` says how it was reached (threshold, counts, guesses), JSON-ready.
    """

    method: str
    epsilon: float
    delta: float
    confidence: float
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "epsilon": float(self.epsilon), "delta": float(self.delta),
                "confidence": float(self.confidence), **self.details}


@dataclass(frozen=True, kw_only=True)
class GDPEstimate:
    """A mu-GDP estimate from canary scores and the epsilon it implies at ``delta`` (no confidence)."""

    mu: float
    epsilon: float
    delta: float
    mean_in: float
    mean_out: float
    std_out: float

    def to_dict(self) -> dict[str, Any]:
        return {"method": "gdp", "mu": float(self.mu), "epsilon": float(self.epsilon), "delta": float(self.delta),
                "mean_in": float(self.mean_in), "mean_out": float(self.mean_out), "std_out": float(self.std_out)}


# -- checks ---------------------------------------------------------------------------------


def _check_unit(value: object, name: str, caller: str, *, closed_low: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not ((0.0 <= value if closed_low else 0.0 < value) and value < 1.0):  # type: ignore[operator]
        interval = "[0, 1)" if closed_low else "(0, 1)"
        raise InvalidParameterError(f"The {name!r} parameter of {caller} must be a float in {interval}. Got {value!r}.")
    return float(value)  # type: ignore[arg-type]


def _check_count(value: object, name: str, caller: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise InvalidParameterError(f"The {name!r} parameter of {caller} must be an integer >= 0. Got {value!r}.")
    return int(value)


def _scores(scores_in: Sequence[float] | np.ndarray, scores_out: Sequence[float] | np.ndarray,
            caller: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(scores_in, dtype=np.float64).ravel(), np.asarray(scores_out, dtype=np.float64).ravel()
    if len(a) == 0 or len(b) == 0:
        raise InvalidParameterError(f"{caller} needs scores of inserted and of left-out canaries; got {len(a)} and "
                                    f"{len(b)}.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InvalidParameterError(f"{caller} got NaN or infinite canary scores.")
    return a, b


# -- Clopper-Pearson (Jagielski et al. 2020) --------------------------------------------------


def clopper_pearson_interval(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """Exact two-sided ``1 - alpha`` binomial interval (each tail ``alpha / 2``).

    The bounds are the ``alpha/2`` quantile of Beta(k, n - k + 1) and the
    ``1 - alpha/2`` quantile of Beta(k + 1, n - k) (0 and 1 at the edges).

    Examples
    --------
    >>> lo, hi = clopper_pearson_interval(0, 10, 0.05)
    >>> lo, round(hi, 4)
    (0.0, 0.3085)
    """
    k, n = _check_count(successes, "successes", "clopper_pearson_interval"), _check_count(trials, "trials",
                                                                                        "clopper_pearson_interval")
    if k > n or n == 0:
        raise InvalidParameterError(f"clopper_pearson_interval needs 0 <= successes <= trials, trials >= 1; got {k}, {n}.")
    alpha = _check_unit(alpha, "alpha", "clopper_pearson_interval")
    lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def _cp_eps(tp: np.ndarray, fp: np.ndarray, n_in: int, n_out: int, alpha: float, delta: float) -> np.ndarray:
    """Per threshold: max of log((TPR_lo - delta) / FPR_hi) and log((TNR_lo - delta) / FNR_hi), one-sided alpha/2 each."""
    a = alpha / 2  # one-sided level of each of the two rates; union bound gives 1 - alpha
    tpr_lo = np.where(tp > 0, stats.beta.ppf(a, np.maximum(tp, 1), n_in - tp + 1), 0.0)
    fpr_hi = np.where(fp < n_out, stats.beta.ppf(1 - a, fp + 1, np.maximum(n_out - fp, 1)), 1.0)
    fn, tn = n_in - tp, n_out - fp
    tnr_lo = np.where(tn > 0, stats.beta.ppf(a, np.maximum(tn, 1), n_out - tn + 1), 0.0)
    fnr_hi = np.where(fn < n_in, stats.beta.ppf(1 - a, fn + 1, np.maximum(n_in - fn, 1)), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = np.where(tpr_lo - delta > 0, np.log(np.maximum(tpr_lo - delta, 1e-300) / fpr_hi), 0.0)
        e2 = np.where(tnr_lo - delta > 0, np.log(np.maximum(tnr_lo - delta, 1e-300) / fnr_hi), 0.0)
    return np.maximum(np.maximum(e1, e2), 0.0)


def clopper_pearson_bound(
    scores_in: Sequence[float] | np.ndarray,
    scores_out: Sequence[float] | np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
    threshold: float | None = None,
) -> EpsilonBound:
    """Lower bound on epsilon from the true/false positive rates of the test "score >= threshold".

    Jagielski, Ullman and Oprea (NeurIPS 2020): an (epsilon, delta)-DP
    mechanism has ``TPR <= e^eps FPR + delta`` and ``TNR <= e^eps FNR + delta``
    for every test, so ``eps >= log((TPR - delta) / FPR)`` and
    ``eps >= log((TNR - delta) / FNR)``. The rates are replaced by one-sided
    Clopper-Pearson bounds (lower on TPR and TNR, upper on FPR and FNR), each
    at level ``(1 - confidence) / 2``. With ``threshold=None`` every distinct
    score is tried and the level is divided by their number (Bonferroni), so
    choosing the best threshold after seeing the scores keeps the confidence.

    Parameters
    ----------
    scores_in, scores_out
        Scores of the inserted and of the left-out canaries.
    delta
        The delta of the claim, in [0, 1).
    confidence
        Probability that the bound holds, in (0, 1).
    threshold
        A threshold fixed before looking at the scores (no correction), or ``None``.

    Returns
    -------
    EpsilonBound
        ``epsilon`` >= 0; ``details`` has the threshold, counts and rates' bounds.
    """
    caller = "clopper_pearson_bound"
    a, b = _scores(scores_in, scores_out, caller)
    delta = _check_unit(delta, "delta", caller, closed_low=True)
    confidence = _check_unit(confidence, "confidence", caller)
    alpha = 1.0 - confidence
    if threshold is None:
        thresholds = np.unique(np.concatenate([a, b]))
        alpha_each = alpha / len(thresholds)
    else:
        thresholds = np.array([float(threshold)])
        alpha_each = alpha
    a_sorted, b_sorted = np.sort(a), np.sort(b)
    tp = len(a) - np.searchsorted(a_sorted, thresholds, side="left")
    fp = len(b) - np.searchsorted(b_sorted, thresholds, side="left")
    eps = _cp_eps(tp.astype(np.int64), fp.astype(np.int64), len(a), len(b), alpha_each, delta)
    best = int(np.argmax(eps))
    return EpsilonBound(
        method="clopper_pearson", epsilon=float(eps[best]), delta=delta, confidence=confidence,
        details={"threshold": float(thresholds[best]), "thresholds_tried": len(thresholds),
                 "true_positives": int(tp[best]), "false_positives": int(fp[best]),
                 "n_in": len(a), "n_out": len(b)},
    )


# -- one run (Steinke, Nasr and Jagielski 2023) -----------------------------------------------


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Upper bound on P[at least ``v`` of ``r`` guesses correct] under (epsilon, delta)-DP.

    Theorem 3.1 (and Appendix D) of Steinke, Nasr and Jagielski (NeurIPS
    2023): with ``q = e^eps / (1 + e^eps)`` and ``W'`` ~ Binomial(r, q),

        P[W >= v] <= P[W' >= v] + 2 m delta max_{1 <= i <= v} P[v > W' >= v - i] / i.

    ``m`` canaries are each inserted independently with probability 1/2; the
    auditor guesses "in" or "out" for ``r`` of them and is right ``v`` times.
    """
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(stats.binom.sf(v - 1, r, q))  # P[W' >= v]
    if delta == 0.0 or v == 0:
        return min(tail, 1.0)
    below = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[W' = v-1], P[W' = v-2], ..., P[W' = 0]
    alpha = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(tail + 2.0 * m * delta * alpha, 1.0)


def one_run_bound(m: int, r: int, v: int, *, delta: float, confidence: float = 0.95) -> EpsilonBound:
    """Largest epsilon rejected at level ``1 - confidence`` by ``v`` correct guesses of ``r`` on ``m`` canaries.

    The bound of Steinke, Nasr and Jagielski, "Privacy auditing with one (1)
    training run" (NeurIPS 2023): the largest ``eps`` such that
    :func:`one_run_p_value` ``(m, r, v, eps, delta) < 1 - confidence`` (the
    p-value grows with eps; found by bisection to 1e-6). 0 when
    even eps = 0 is not rejected.

    Examples
    --------
    With delta = 0 and every one of 100 guesses right, ``q^100 = 0.05`` gives
    ``eps = log(q / (1 - q))`` with ``q = 0.05 ** (1 / 100)``:

    >>> round(one_run_bound(1000, 100, 100, delta=0.0).epsilon, 3)
    3.493
    """
    caller = "one_run_bound"
    m, r, v = (_check_count(x, n, caller) for x, n in ((m, "m"), (r, "r"), (v, "v")))
    if not v <= r <= m:
        raise InvalidParameterError(f"{caller} needs 0 <= v <= r <= m; got m={m}, r={r}, v={v}.")
    delta = _check_unit(delta, "delta", caller, closed_low=True)
    confidence = _check_unit(confidence, "confidence", caller)
    p = 1.0 - confidence
    details = {"m": m, "guesses": r, "correct": v}
    if r == 0 or one_run_p_value(m, r, v, 0.0, delta) >= p:
        return EpsilonBound(method="one_run", epsilon=0.0, delta=delta, confidence=confidence, details=details)
    lo, hi = 0.0, 1.0
    while one_run_p_value(m, r, v, hi, delta) < p and hi < 1e3:
        lo, hi = hi, hi * 2
    while hi - lo > 1e-6:
        mid = 0.5 * (lo + hi)
        if one_run_p_value(m, r, v, mid, delta) < p:
            lo = mid
        else:
            hi = mid
    return EpsilonBound(method="one_run", epsilon=lo, delta=delta, confidence=confidence, details=details)


def one_run_bound_from_scores(
    scores: Sequence[float] | np.ndarray,
    inserted: Sequence[bool] | np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
    guesses: Sequence[int] | None = None,
) -> EpsilonBound:
    """One-run bound from canary scores: guess "in" for the top k/2 scores, "out" for the bottom k/2.

    Each ``k`` of ``guesses`` (default: 10, 20, 50, 100, 200, 500, 1000 and
    ``m``, those <= m) is tried and the level is divided by their number
    (Bonferroni), so picking the best k keeps the confidence; the others
    abstain, as in Steinke, Nasr and Jagielski (2023, Section 6).
    """
    caller = "one_run_bound_from_scores"
    s = np.asarray(scores, dtype=np.float64).ravel()
    ins = np.asarray(inserted, dtype=bool).ravel()
    if len(s) != len(ins) or len(s) == 0:
        raise InvalidParameterError(f"{caller} needs one inserted flag per score; got {len(s)} scores, {len(ins)} flags.")
    if not np.isfinite(s).all():
        raise InvalidParameterError(f"{caller} got NaN or infinite canary scores.")
    confidence = _check_unit(confidence, "confidence", caller)
    m = len(s)
    ks = sorted({int(k) for k in (guesses or (10, 20, 50, 100, 200, 500, 1000, m)) if 2 <= k <= m})
    if not ks:
        ks = [m]
    each = 1.0 - (1.0 - confidence) / len(ks)
    order = np.argsort(-s, kind="stable")
    best: EpsilonBound | None = None
    for k in ks:
        top, bottom = order[: k - k // 2], order[m - k // 2 :] if k // 2 else order[:0]
        v = int(ins[top].sum() + (~ins[bottom]).sum())
        bound = one_run_bound(m, k, v, delta=delta, confidence=each)
        if best is None or bound.epsilon > best.epsilon:
            best = bound
    assert best is not None
    return EpsilonBound(method="one_run", epsilon=best.epsilon, delta=best.delta, confidence=confidence,
                        details={**best.details, "guess_counts_tried": ks})


# -- Gaussian DP (Andrew et al. 2023) ---------------------------------------------------------


def gdp_delta(mu: float, epsilon: float) -> float:
    """The delta of mu-GDP at ``epsilon``: ``Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)``.

    Dong, Roth and Su, "Gaussian differential privacy" (JRSS-B 2022), Corollary 2.13.
    """
    if mu <= 0:
        return 0.0
    # e^eps Phi(.) in log space: e^eps overflows for the large epsilons of a large mu
    second = math.exp(epsilon + float(stats.norm.logcdf(-epsilon / mu - mu / 2)))
    return max(float(stats.norm.cdf(-epsilon / mu + mu / 2)) - second, 0.0)


def gdp_epsilon(mu: float, delta: float) -> float:
    """Smallest epsilon >= 0 at which mu-GDP is (epsilon, delta)-DP (:func:`gdp_delta` inverted with brentq).

    Examples
    --------
    >>> round(gdp_epsilon(1.0, 1e-5), 3)
    4.377
    """
    delta = _check_unit(delta, "delta", "gdp_epsilon")
    if not (isinstance(mu, int | float) and math.isfinite(mu) and mu >= 0):
        raise InvalidParameterError(f"The 'mu' parameter of gdp_epsilon must be a finite float >= 0. Got {mu!r}.")
    if mu == 0 or gdp_delta(mu, 0.0) <= delta:
        return 0.0
    hi = 1.0
    while gdp_delta(mu, hi) > delta:
        hi *= 2
    return float(optimize.brentq(lambda e: gdp_delta(mu, e) - delta, 0.0, hi, xtol=1e-10, rtol=1e-12))


def gdp_estimate(
    scores_in: Sequence[float] | np.ndarray, scores_out: Sequence[float] | np.ndarray, *, delta: float
) -> GDPEstimate:
    """Estimate mu-GDP from canary scores, then epsilon at ``delta``.

    Andrew et al., "One-shot empirical privacy estimation for federated
    learning" (2023): canary cosines with the released model delta are nearly
    Gaussian; the inserted canaries' cosines are shifted by ``mu`` standard
    deviations of the left-out canaries' cosines, so the run behaves like a
    mu-GDP mechanism with ``mu = (mean_in - mean_out) / std_out`` (0 when
    negative). It is an estimate, not a bound: it has no confidence level.
    """
    a, b = _scores(scores_in, scores_out, "gdp_estimate")
    if len(b) < 2:
        raise InvalidParameterError("gdp_estimate needs at least 2 left-out canaries to estimate a spread.")
    std = float(np.std(b, ddof=1))
    diff = float(np.mean(a) - np.mean(b))
    mu = max(diff, 0.0) / std if std > 0 else (math.inf if diff > 0 else 0.0)
    eps = gdp_epsilon(mu, delta) if math.isfinite(mu) else math.inf
    return GDPEstimate(mu=mu, epsilon=eps, delta=float(delta), mean_in=float(np.mean(a)), mean_out=float(np.mean(b)),
                       std_out=std)

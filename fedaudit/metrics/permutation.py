"""Pure kernels of the permutation test and of the shadow-data jackknife.

The permutation test asks whether an attack's score could come from an
attacker whose shadow labels mean nothing: the shadow speakers are relabelled
into two groups that are each balanced in gender (the labels move per speaker,
never per update, so every update of a speaker keeps one label), the attack is
refitted on each relabelling and scored on the target, and the observed score
is compared with that null distribution. This module holds the parts that need
no recording: drawing the relabellings, the p-value with the +1 correction, and
the summary; :mod:`fedaudit.audit.significance` refits the attacks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedaudit.exceptions import InvalidParameterError
from fedaudit.types import GENDERS

__all__ = [
    "Jackknife",
    "SIGNIFICANCE_LEVEL",
    "Significance",
    "balanced_relabellings",
    "count_balanced_relabellings",
    "jackknife",
    "permutation_p_value",
    "significance",
]

#: A p-value below this is "significant" in verdicts.
SIGNIFICANCE_LEVEL = 0.05


def permutation_p_value(observed: float, null: Sequence[float] | np.ndarray) -> float:
    """``(1 + #{null >= observed}) / (N + 1)``: the permutation p-value with the +1 correction.

    The correction counts the observed labelling as one of the possible ones, so the p-value is
    never 0 and the test keeps its level however few relabellings were drawn.

    Examples
    --------
    >>> permutation_p_value(0.9, [0.5, 0.6, 0.95, 0.4])
    0.4
    >>> permutation_p_value(0.9, [0.5] * 19)
    0.05
    """
    null = np.asarray(null, dtype=np.float64)
    if null.size == 0:
        raise InvalidParameterError("The permutation test needs at least one null score.")
    if not math.isfinite(float(observed)):
        return float("nan")
    return float((1 + np.sum(null >= float(observed) - 1e-12)) / (null.size + 1))


@dataclass(frozen=True, kw_only=True)
class Significance:
    """An observed score against its null distribution (scores of attacks fitted on meaningless labels)."""

    observed: float
    null: tuple[float, ...]
    p_value: float
    n_permutations: int
    n_possible: int  # distinct gender-free balanced relabellings of the shadow speakers
    exhaustive: bool  # every one of them was tried
    null_median: float
    null_p95: float
    above_null: float  # observed minus the null median (ASR points an informed attacker gains)
    statistic: str = "asr"

    @property
    def significant(self) -> bool:
        return self.p_value < SIGNIFICANCE_LEVEL

    @property
    def smallest_p(self) -> float:
        """The smallest p-value this number of relabellings can give: ``1 / (N + 1)``."""
        return 1.0 / (self.n_permutations + 1)

    def verdict(self) -> str:
        """One sentence: "significant at p = 0.012 (N = 20 ...)" or "not distinguishable ... (p = 0.41)".

        Examples
        --------
        >>> significance(0.95, [0.5] * 20, n_possible=4900).verdict()
        'significant at p = 0.048 (N = 20 gender-free relabellings of the shadow speakers)'
        >>> significance(0.6, [0.7, 0.5, 0.4, 0.6], n_possible=4).verdict()  # doctest: +NORMALIZE_WHITESPACE
        'not distinguishable from an attacker with meaningless labels (p = 0.60; with N = 4 relabellings
        the test cannot reach p < 0.05)'
        """
        if self.significant:
            return (f"significant at p = {_p(self.p_value)} (N = {self.n_permutations} gender-free relabellings "
                    "of the shadow speakers)")
        limit = ""
        if self.smallest_p >= SIGNIFICANCE_LEVEL:
            limit = (f"; with N = {self.n_permutations} relabellings the test cannot reach "
                     f"p < {SIGNIFICANCE_LEVEL:g}")
        return f"not distinguishable from an attacker with meaningless labels (p = {_p(self.p_value)}{limit})"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the ``significance`` object of an audit's attack entry)."""
        return {
            "p_value": self.p_value, "n_permutations": self.n_permutations, "null_median": self.null_median,
            "null_p95": self.null_p95, "above_null": self.above_null, "observed": self.observed,
            "null": list(self.null), "n_possible": self.n_possible, "exhaustive": self.exhaustive,
            "statistic": self.statistic,
        }


def _p(p: float) -> str:
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def significance(
    observed: float, null: Sequence[float] | np.ndarray, *, n_possible: int | None = None, statistic: str = "asr"
) -> Significance:
    """Summarise an observed score against the scores of attacks fitted on gender-free relabellings.

    Parameters
    ----------
    observed
        The attack's score with the true shadow labels.
    null
        Its score after each refit on a gender-free relabelling.
    n_possible
        How many distinct relabellings exist (``len(null)`` when not given); equal to ``len(null)``
        means the test was exhaustive.
    statistic
        What was scored (``"asr"``, ``"best-layer asr"``).
    """
    values = np.asarray(null, dtype=np.float64)
    p = permutation_p_value(observed, values)
    n_possible = len(values) if n_possible is None else int(n_possible)
    median = float(np.median(values))
    return Significance(
        observed=float(observed), null=tuple(float(v) for v in values), p_value=p, n_permutations=len(values),
        n_possible=n_possible, exhaustive=len(values) >= n_possible, null_median=median,
        null_p95=float(np.percentile(values, 95)), above_null=float(observed) - median, statistic=statistic,
    )


def _halves(n: int) -> list[int]:
    """Sizes of the half of ``n`` speakers that takes the first label: ``n // 2`` and, for odd ``n``, one more."""
    return sorted({n // 2, n - n // 2})


def _excluded(labels: np.ndarray, truth: np.ndarray) -> bool:
    """One label only, the true labels, or their complement: not a gender-free labelling."""
    return len(np.unique(labels)) < 2 or bool(np.all(labels == truth)) or bool(np.all(labels != truth))


def count_balanced_relabellings(genders: Sequence[str] | np.ndarray) -> int:
    """How many distinct gender-free, gender-balanced relabellings of these speakers exist.

    Each gender's speakers are split in half (for an odd count, either way round) and one half of
    each gender takes label ``"F"``; labellings with one label only, the true one and its complement
    are left out.

    Examples
    --------
    >>> count_balanced_relabellings(["F"] * 4 + ["M"] * 4)  # C(4, 2) * C(4, 2)
    36
    >>> count_balanced_relabellings(["F", "M"])  # every split is the truth, its complement or one label
    0
    """
    truth = _truth(genders)
    n_f, n_m = int(np.sum(truth == 0)), int(np.sum(truth == 1))
    total = sum(math.comb(n_f, k) for k in _halves(n_f)) * sum(math.comb(n_m, k) for k in _halves(n_m))
    if total <= 4096:  # small: count exactly what the enumeration keeps
        return sum(1 for _ in _enumerate(truth))
    return total  # large: the few excluded labellings (one label, truth, complement) need n_f or n_m < 2


def _truth(genders: Sequence[str] | np.ndarray) -> np.ndarray:
    genders = np.asarray(genders).astype(str)
    bad = sorted(set(genders.tolist()) - set(GENDERS))
    if bad:
        raise InvalidParameterError(f"Speaker genders must be 'F' or 'M'; got {bad}.")
    return (genders == GENDERS[1]).astype(np.int64)


def _enumerate(truth: np.ndarray) -> Any:
    female, male = np.flatnonzero(truth == 0), np.flatnonzero(truth == 1)
    for k_f in _halves(len(female)):
        for f_sub in itertools.combinations(female.tolist(), k_f):
            for k_m in _halves(len(male)):
                for m_sub in itertools.combinations(male.tolist(), k_m):
                    labels = np.ones(len(truth), dtype=np.int64)
                    labels[list(f_sub) + list(m_sub)] = 0
                    if not _excluded(labels, truth):
                        yield labels


def balanced_relabellings(
    genders: Sequence[str] | np.ndarray, *, n: int, seed: int | Sequence[int] = 0
) -> tuple[list[np.ndarray], int]:
    """Gender-free, gender-balanced relabellings of speakers: every one when there are at most ``n``, else ``n`` drawn.

    Half of each gender's speakers takes label ``"F"`` and the other half ``"M"``, so the new
    labels say nothing about gender; a labelling with one label only, equal to the true one or to its
    complement is never returned. Drawn labellings are distinct.

    Parameters
    ----------
    genders
        The true gender of each speaker (``"F"`` / ``"M"``).
    n
        How many relabellings at most.
    seed
        Seed of the draw (unused when every relabelling is returned).

    Returns
    -------
    tuple
        The relabellings (arrays of ``"F"`` / ``"M"``, one entry per speaker) and how many exist.

    Examples
    --------
    >>> labels, possible = balanced_relabellings(["F", "F", "M", "M"], n=10)
    >>> possible, [lab.tolist() for lab in labels][:2]
    (4, [['F', 'M', 'F', 'M'], ['F', 'M', 'M', 'F']])
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidParameterError(f"The number of relabellings must be an integer >= 1. Got {n!r}.")
    truth = _truth(genders)
    possible = count_balanced_relabellings(genders)
    names = np.array(GENDERS)
    if possible <= n:
        return [names[lab] for lab in _enumerate(truth)], possible
    rng = np.random.default_rng(seed)
    female, male = np.flatnonzero(truth == 0), np.flatnonzero(truth == 1)
    seen: set[bytes] = set()
    out: list[np.ndarray] = []
    while len(out) < n:
        labels = np.ones(len(truth), dtype=np.int64)
        for group in (female, male):
            k = int(rng.choice(_halves(len(group))))
            labels[rng.choice(group, size=k, replace=False)] = 0
        key = labels.tobytes()
        if key in seen or _excluded(labels, truth):
            continue
        seen.add(key)
        out.append(names[labels])
    return out, possible


@dataclass(frozen=True, kw_only=True)
class Jackknife:
    """A leave-one-out interval: how much a score depends on which units of the attacker's data it had."""

    estimate: float
    leave_one_out: tuple[float, ...]
    se: float
    ci_low: float
    ci_high: float
    unit: str = "shadow run"

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "leave_one_out": list(self.leave_one_out), "se": self.se,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "unit": self.unit, "n": len(self.leave_one_out)}


def jackknife(
    estimate: float, leave_one_out: Sequence[float] | np.ndarray, *, unit: str = "shadow run", level: float = 0.95
) -> Jackknife:
    """Jackknife standard error and a Student-t interval (clipped to [0, 1]) from leave-one-out scores.

    ``se = sqrt((n - 1) / n * sum((loo_i - mean(loo))^2))``; the interval is ``estimate +- t * se``
    with ``n - 1`` degrees of freedom, so a jackknife over few units (three shadow runs) is wide, as
    it should be.

    Examples
    --------
    >>> j = jackknife(0.8, [0.7, 0.8, 0.9])
    >>> round(j.se, 4), round(j.ci_low, 3), round(j.ci_high, 3)
    (0.1155, 0.303, 1.0)
    """
    from scipy import stats

    loo = np.asarray(leave_one_out, dtype=np.float64)
    if loo.size < 2:
        raise InvalidParameterError(f"A jackknife needs at least 2 {unit}s; got {loo.size}.")
    n = loo.size
    se = float(math.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))
    half = float(stats.t.ppf(0.5 + level / 2, df=n - 1)) * se
    return Jackknife(estimate=float(estimate), leave_one_out=tuple(float(v) for v in loo), se=se,
                     ci_low=max(0.0, float(estimate) - half), ci_high=min(1.0, float(estimate) + half), unit=unit)

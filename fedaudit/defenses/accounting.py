"""Privacy accounting: Opacus accountants, calibration, the analytic Gaussian mechanism.

* :func:`epsilon` and :func:`calibrate_noise`: Poisson-subsampled Gaussian
  steps (DP-SGD steps, or UDP over rounds) with Opacus' RDP or PRV accountant.
* :func:`per_client_epsilon`, :func:`udp_per_client_epsilon`: each client's
  epsilon, composed over every round it took part in.
* :func:`udp_epsilon`: the central (aggregate-view) epsilon of UDP, amplified
  by client sampling.
* :func:`gaussian_delta`, :func:`analytic_gaussian_sigma`: the exact Gaussian
  mechanism of Balle and Wang (ICML 2018), which calibrates local DP.
* :func:`rounds_joined`: how many updates each client sent in a run.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from fedaudit.defenses._validation import (
    check_choice,
    check_delta,
    check_nonnegative,
    check_positive,
    check_sample_rate,
    check_steps,
    require_opacus,
)
from fedaudit.exceptions import InvalidParameterError
from fedaudit.types import Participation

__all__ = [
    "ACCOUNTANTS",
    "ADJACENCIES",
    "analytic_gaussian_sigma",
    "calibrate_noise",
    "epsilon",
    "gaussian_delta",
    "per_client_epsilon",
    "rounds_joined",
    "udp_epsilon",
    "udp_per_client_epsilon",
]

#: Privacy accountants of Opacus that can be selected by key.
ACCOUNTANTS: tuple[str, ...] = ("rdp", "prv")
#: Neighbouring relations for per-client accounting.
ADJACENCIES: tuple[str, ...] = ("add_remove", "replace")


# -- analytic Gaussian mechanism ----------------------------------------------------------------


def gaussian_delta(sigma: float, epsilon: float, sensitivity: float = 1.0) -> float:
    """Smallest delta for which the Gaussian mechanism is (epsilon, delta)-DP.

    Theorem 8 of Balle and Wang, "Improving the Gaussian mechanism for
    differential privacy: analytical calibration and optimal denoising"
    (ICML 2018): with ``a = sensitivity / (2 sigma)`` and ``b = epsilon sigma /
    sensitivity``, ``delta = Phi(a - b) - exp(epsilon) Phi(-a - b)``.

    Parameters
    ----------
    sigma
        Noise standard deviation, > 0.
    epsilon
        Privacy parameter, >= 0.
    sensitivity
        L2 sensitivity of the released function, > 0.

    Returns
    -------
    float
        The exact delta (tight: no smaller delta holds).

    Examples
    --------
    >>> round(gaussian_delta(1.0, 0.0), 4)  # total variation of N(0,1) and N(1,1)
    0.3829
    """
    from scipy.special import log_ndtr, ndtr

    sigma = check_positive(sigma, "sigma", "gaussian_delta")
    epsilon = check_nonnegative(epsilon, "epsilon", "gaussian_delta")
    sensitivity = check_positive(sensitivity, "sensitivity", "gaussian_delta")
    a = sensitivity / (2.0 * sigma)
    b = epsilon * sigma / sensitivity
    return float(max(0.0, ndtr(a - b) - math.exp(epsilon + float(log_ndtr(-a - b)))))


def analytic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """Smallest noise standard deviation making one Gaussian release (epsilon, delta)-DP.

    The analytic Gaussian mechanism of Balle and Wang (ICML 2018, Algorithm 1):
    solves :func:`gaussian_delta` ``(sigma, epsilon, sensitivity) = delta`` for
    sigma with Brent's method (scipy). Unlike the classical bound
    ``sigma = sensitivity sqrt(2 ln(1.25/delta)) / epsilon`` it is exact and
    valid for every epsilon > 0, including epsilon > 1.

    Parameters
    ----------
    epsilon
        Target epsilon, > 0.
    delta
        Target delta, in (0, 1).
    sensitivity
        L2 sensitivity, > 0.

    Returns
    -------
    float
        sigma, with ``gaussian_delta(sigma, epsilon, sensitivity) <= delta``.

    Raises
    ------
    InvalidParameterError
        If a parameter is out of range.

    Examples
    --------
    >>> round(analytic_gaussian_sigma(1.0, 1e-5), 2)  # the classical bound gives 4.84
    3.73
    """
    from scipy.optimize import brentq

    epsilon = check_positive(epsilon, "epsilon", "analytic_gaussian_sigma")
    delta = check_delta(delta, "analytic_gaussian_sigma")
    sensitivity = check_positive(sensitivity, "sensitivity", "analytic_gaussian_sigma")

    def excess(log_sigma: float) -> float:
        return gaussian_delta(math.exp(log_sigma), epsilon, sensitivity) - delta

    lo, hi = math.log(sensitivity) - 1.0, math.log(sensitivity) + 1.0
    while excess(lo) < 0:
        lo -= 2.0
    while excess(hi) > 0:
        hi += 2.0
    log_sigma = brentq(excess, lo, hi, xtol=1e-12, rtol=1e-12)
    sigma = math.exp(log_sigma)
    while gaussian_delta(sigma, epsilon, sensitivity) > delta:  # round up, never under-noise
        sigma = math.nextafter(sigma, math.inf) * (1 + 1e-12)
    return sigma


# -- accounting -------------------------------------------------------------------------------


def _eps_from_history(history: Sequence[tuple[float, float, int]], delta: float, accountant: str) -> float:
    """Epsilon of a composition of Poisson-subsampled Gaussian steps (opacus accountant)."""
    require_opacus()
    from opacus.accountants import create_accountant

    active = [(float(z), float(q), int(s)) for z, q, s in history if s > 0]
    if not active:
        return 0.0
    if any(z == 0.0 for z, _, _ in active):
        return math.inf
    # Composition is commutative: merge identical (z, q) entries to speed the accountant up.
    merged: dict[tuple[float, float], int] = {}
    for z, q, s in active:
        merged[(z, q)] = merged.get((z, q), 0) + s
    acc = create_accountant(mechanism=accountant)
    acc.history = [(z, q, s) for (z, q), s in sorted(merged.items())]
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        # The PRV of a Poisson-subsampled Gaussian takes log(1 - q), which is -inf for q = 1.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(acc.get_epsilon(delta=delta))


def _checked_epsilon(
    caller: str, noise_multiplier: object, rate: tuple[str, object], steps: tuple[str, object], delta: object,
    accountant: object,
) -> float:
    """Epsilon of one mechanism repeated ``steps`` times at sampling ``rate``, each argument checked by name."""
    z = check_nonnegative(noise_multiplier, "noise_multiplier", caller)
    q = check_sample_rate(rate[1], rate[0], caller)
    n = check_steps(steps[1], steps[0], caller)
    delta = check_delta(delta, caller)
    accountant = check_choice(accountant, "accountant", caller, ACCOUNTANTS)
    return _eps_from_history([(z, q, n)], delta, accountant)


def epsilon(
    noise_multiplier: float, *, sample_rate: float, steps: int, delta: float, accountant: str = "rdp"
) -> float:
    """Epsilon spent by ``steps`` Poisson-subsampled Gaussian steps (DP-SGD, or UDP over rounds).

    Parameters
    ----------
    noise_multiplier
        Noise standard deviation over the clip bound, >= 0 (0 gives ``inf``).
    sample_rate
        Probability that a record (sample, or client) takes part in one step, in (0, 1].
    steps
        Number of steps (DP-SGD steps, or FL rounds), >= 0.
    delta
        Target delta, in (0, 1).
    accountant
        ``"rdp"`` (Mironov 2017) or ``"prv"`` (Gopi et al. 2021), from Opacus.

    Returns
    -------
    float
        The epsilon (an upper bound) for add/remove adjacency.

    Examples
    --------
    >>> round(epsilon(1.0, sample_rate=1.0, steps=1, delta=1e-5), 2)
    4.73
    """
    return _checked_epsilon("epsilon", noise_multiplier, ("sample_rate", sample_rate), ("steps", steps),
                            delta, accountant)


def calibrate_noise(
    target_epsilon: float, *, delta: float, sample_rate: float, steps: int, accountant: str = "rdp"
) -> float:
    """Smallest noise multiplier whose :func:`epsilon` is at most ``target_epsilon``.

    Solved with Brent's method on ``log(noise_multiplier)`` to a relative
    precision of 1e-6 (Opacus' ``get_noise_multiplier`` stops at an absolute
    epsilon tolerance of 0.01, too coarse for small targets), then rounded up
    so that the target is never exceeded.

    Parameters
    ----------
    target_epsilon
        Target epsilon, finite, > 0.
    delta, sample_rate, steps, accountant
        As in :func:`epsilon`; ``steps`` must be >= 1.

    Returns
    -------
    float
        The noise multiplier.

    Raises
    ------
    InvalidParameterError
        If a parameter is out of range.

    Examples
    --------
    >>> z = calibrate_noise(2.0, delta=1e-5, sample_rate=0.1, steps=200)
    >>> epsilon(z, sample_rate=0.1, steps=200, delta=1e-5) <= 2.0
    True
    """
    from scipy.optimize import brentq

    caller = "calibrate_noise"
    target = check_positive(target_epsilon, "target_epsilon", caller)
    q = check_sample_rate(sample_rate, "sample_rate", caller)
    steps = check_steps(steps, "steps", caller)
    if steps == 0:
        raise InvalidParameterError(
            f"The 'steps' parameter of {caller} must be an integer >= 1. Got {steps!r} instead; "
            "zero steps spend no privacy and need no noise."
        )
    delta = check_delta(delta, caller)
    accountant = check_choice(accountant, "accountant", caller, ACCOUNTANTS)

    def eps_at(z: float) -> float:
        with warnings.catch_warnings():
            # Small trial noise multipliers make RDP pick its largest order; harmless while searching.
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            return _eps_from_history([(z, q, steps)], delta, accountant)

    def excess(log_z: float) -> float:
        return eps_at(math.exp(log_z)) - target

    # Bracket the root on log(z): excess(lo) > 0 >= excess(hi).
    lo, hi = math.log(0.5), math.log(2.0)
    while excess(hi) > 0:
        lo, hi = hi, hi + math.log(4.0)
        if hi > math.log(1e6):
            raise InvalidParameterError(
                f"No noise multiplier below 1e6 reaches epsilon {target!r} at delta {delta!r} "
                f"with sample_rate {q!r} and {steps} steps; raise the target epsilon or delta."
            )
    while excess(lo) <= 0:
        if lo < math.log(1e-3):
            return math.exp(lo)
        hi, lo = lo, lo - math.log(4.0)
    root = brentq(excess, lo, hi, xtol=1e-6)
    # Step just past the root on the safe side; fall back on the bracket end if rounding bit.
    z = math.exp(root + 2e-6)
    if eps_at(z) > target:
        z = math.exp(hi)
    return z


def _row_array(value: object, name: str, n: int, caller: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if arr.shape != (n,):
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be a scalar or a 1-D array with one entry per row "
            f"({n} rows). Got shape {arr.shape} instead."
        )
    return arr


def per_client_epsilon(
    client_ids: np.ndarray,
    *,
    steps_per_row: np.ndarray,
    sample_rate_per_row: np.ndarray,
    noise_multiplier: float | np.ndarray,
    delta: float,
    accountant: str = "rdp",
    adjacency: str = "add_remove",
) -> dict[int, float]:
    """Epsilon of each client, composed over every round it took part in.

    One row per client update (per participation): the client's id, the
    DP steps it ran in that round and their sample rate (and optionally the
    noise multiplier of that round). Each client's rows are composed into one
    history ``[(noise, sample_rate, steps), ...]`` and passed to one Opacus
    accountant. A fresh ``PrivacyEngine`` per round would report only the last
    round's epsilon and so under-report what the client has spent.

    Parameters
    ----------
    client_ids
        Integer client id of each row, shape (n_rows,).
    steps_per_row
        Number of noisy steps in the row's round, integers >= 0 (FedSGD DP-SGD:
        1; FedAvg DP-SGD: local steps; UDP/LDP: 1 release).
    sample_rate_per_row
        Sample rate of those steps, in (0, 1] (DP-SGD: batch size / client
        training set size; a release of the whole update: 1).
    noise_multiplier
        Scalar, or one value per row, >= 0.
    delta
        Target delta of every client, in (0, 1).
    accountant
        ``"rdp"`` or ``"prv"``.
    adjacency
        ``"add_remove"`` (the accountants' relation: sensitivity = clip) or
        ``"replace"`` (any two datasets of the client, sensitivity = 2 clip,
        the local-DP relation; only for sample rate 1, where it is exact:
        the noise multiplier is halved).

    Returns
    -------
    dict[int, float]
        Client id to epsilon, clients in increasing id order.

    Raises
    ------
    InvalidParameterError
        If arrays disagree in length or a value is out of range.

    Examples
    --------
    >>> eps = per_client_epsilon(np.array([0, 1, 0]), steps_per_row=np.array([1, 1, 1]),
    ...                          sample_rate_per_row=np.array([1.0, 1.0, 1.0]), noise_multiplier=1.0,
    ...                          delta=1e-5)
    >>> eps[0] > eps[1]
    True
    """
    caller = "per_client_epsilon"
    ids = np.asarray(client_ids)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise InvalidParameterError(
            f"The 'client_ids' parameter of {caller} must be a 1-D integer array. "
            f"Got dtype {ids.dtype} and shape {ids.shape} instead."
        )
    n = ids.shape[0]
    steps = _row_array(steps_per_row, "steps_per_row", n, caller)
    rates = _row_array(sample_rate_per_row, "sample_rate_per_row", n, caller).astype(np.float64)
    noise = _row_array(noise_multiplier, "noise_multiplier", n, caller).astype(np.float64)
    if n and (not np.issubdtype(steps.dtype, np.integer) or (steps < 0).any()):
        raise InvalidParameterError(
            f"The 'steps_per_row' parameter of {caller} must hold integers >= 0. Got {steps[:5].tolist()!r} (first five) instead."
        )
    if n and (np.isnan(rates).any() or (rates <= 0).any() or (rates > 1).any()):
        raise InvalidParameterError(
            f"The 'sample_rate_per_row' parameter of {caller} must hold values in (0, 1]. "
            f"Got values from {float(np.nanmin(rates))!r} to {float(np.nanmax(rates))!r} instead."
        )
    if n and (np.isnan(noise).any() or (noise < 0).any() or np.isinf(noise).any()):
        raise InvalidParameterError(
            f"The 'noise_multiplier' parameter of {caller} must hold finite values >= 0. "
            f"Got values from {float(np.nanmin(noise))!r} to {float(np.nanmax(noise))!r} instead."
        )
    delta = check_delta(delta, caller)
    accountant = check_choice(accountant, "accountant", caller, ACCOUNTANTS)
    adjacency = check_choice(adjacency, "adjacency", caller, ADJACENCIES)
    if adjacency == "replace":
        if n and (rates != 1.0).any():
            raise InvalidParameterError(
                f"The 'adjacency' parameter of {caller} can be 'replace' only when every sample rate is 1 "
                "(the halved noise multiplier is exact only without subsampling). "
                f"Got sample rates down to {float(rates.min())!r} instead."
            )
        noise = noise / 2.0

    histories: dict[int, list[tuple[float, float, int]]] = {}
    for cid, s, q, z in zip(ids.tolist(), steps.tolist(), rates.tolist(), noise.tolist(), strict=True):
        histories.setdefault(int(cid), []).append((z, q, int(s)))
    cache: dict[tuple[tuple[float, float, int], ...], float] = {}
    result: dict[int, float] = {}
    for cid in sorted(histories):
        merged: dict[tuple[float, float], int] = {}
        for z, q, s in histories[cid]:
            merged[(z, q)] = merged.get((z, q), 0) + s
        key = tuple((z, q, s) for (z, q), s in sorted(merged.items()))
        if key not in cache:
            cache[key] = _eps_from_history(key, delta, accountant)
        result[cid] = cache[key]
    return result


def udp_epsilon(
    noise_multiplier: float, *, client_fraction: float, rounds: int, delta: float, accountant: str = "rdp"
) -> float:
    """Central user-level epsilon of UDP over FL rounds, amplified by client sampling.

    The guarantee of McMahan et al. (ICLR 2018) for an adversary who sees only
    the aggregated models: each round samples clients with probability
    ``client_fraction`` and adds noise ``noise_multiplier * clip`` per client;
    the accountant composes ``rounds`` subsampled Gaussian steps. It does NOT
    bound what an honest-but-curious server learns from a client's individual
    updates; for that use :func:`udp_per_client_epsilon`.

    Parameters
    ----------
    noise_multiplier
        z >= 0 of :class:`~fedaudit.defenses.transforms.UserLevelDP`.
    client_fraction
        Fraction of clients selected per round, in (0, 1].
    rounds
        Number of rounds, >= 0.
    delta, accountant
        As in :func:`epsilon`.

    Returns
    -------
    float
        The epsilon. Opacus assumes Poisson sampling; the simulator samples a
        fixed number of clients, for which the figure is the customary approximation.

    Examples
    --------
    >>> udp_epsilon(1.0, client_fraction=0.1, rounds=200, delta=1e-5) < epsilon(
    ...     1.0, sample_rate=1.0, steps=20, delta=1e-5)
    True
    """
    return _checked_epsilon("udp_epsilon", noise_multiplier, ("client_fraction", client_fraction),
                            ("rounds", rounds), delta, accountant)


def udp_per_client_epsilon(
    client_ids: np.ndarray,
    *,
    noise_multiplier: float | np.ndarray,
    delta: float,
    accountant: str = "rdp",
    adjacency: str = "add_remove",
) -> dict[int, float]:
    """Epsilon of each client against a server that sees its individual UDP/LDP updates.

    One row per update the client sent; each is one Gaussian release of the
    whole clipped update (sample rate 1, no amplification), and a client's
    releases compose over the rounds it joined.

    Parameters
    ----------
    client_ids
        Client id of each recorded update, shape (n_updates,).
    noise_multiplier
        z of :class:`~fedaudit.defenses.transforms.UserLevelDP`, scalar or per row; for :class:`~fedaudit.defenses.transforms.LocalDP` pass
        ``noise_std / clip``.
    delta, accountant
        As in :func:`per_client_epsilon`.
    adjacency
        ``"add_remove"`` (sensitivity clip) or ``"replace"`` (sensitivity
        2 clip: distinguishing two datasets of the same client, the
        attribute-inference threat).

    Returns
    -------
    dict[int, float]
        Client id to epsilon.

    Examples
    --------
    >>> udp_per_client_epsilon(np.array([3, 3]), noise_multiplier=1.0, delta=1e-5)[3] > 4.73
    True
    """
    ids = np.asarray(client_ids)
    n = ids.shape[0] if ids.ndim == 1 else 0  # a wrong shape is reported by per_client_epsilon
    return per_client_epsilon(
        ids, steps_per_row=np.ones(n, dtype=np.int64), sample_rate_per_row=np.ones(n),
        noise_multiplier=noise_multiplier, delta=delta, accountant=accountant, adjacency=adjacency,
    )


def rounds_joined(participation: Participation) -> dict[int, int]:
    """Client id to the number of updates it sent in the run, for every client that sent one.

    Examples
    --------
    >>> import numpy as np
    >>> from fedaudit.types import Participation
    >>> p = Participation(client_id=np.array([2, 0, 2]), server_round=np.array([0, 1, 1]),
    ...                   local_steps=np.ones(3, int), num_samples=np.ones(3, int), n_train=np.array([5, 5, 5]),
    ...                   batch_size=5, rounds=2, n_selected=2, n_clients=3)
    >>> rounds_joined(p)
    {0: 1, 2: 2}
    """
    ids, counts = np.unique(np.asarray(participation.client_id), return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts, strict=True)}

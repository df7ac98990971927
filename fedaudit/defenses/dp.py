"""Differential privacy for client updates: clipping, Gaussian noise, accounting, DP-SGD.

Three families live here.

* Pure update transforms ``(update, rng) -> update`` applied on the client
  before the update leaves it: :class:`ClipNorm`, :class:`GaussianNoise`,
  :class:`UserLevelDP` (clip the whole update, add Gaussian noise; the UDP of
  Feng, Peri and Narayanan 2022) and :class:`LocalDP` (noise calibrated so
  that one release is (epsilon, delta)-DP; the LDP-FL setting of Mohammadi et
  al. 2023).
* Accounting with Opacus' RDP or PRV accountants: :func:`epsilon`,
  :func:`calibrate_noise`, :func:`per_client_epsilon`, :func:`udp_epsilon`,
  :func:`udp_per_client_epsilon`.
* DP-SGD client training with Opacus ghost clipping: :class:`DPSGDConfig`
  and :class:`DPSGDTrainer` (Abadi et al. 2016; ghost clipping of Li et al.
  2022 / Bu et al. 2023 as implemented in Opacus >= 1.5).

Units. A :class:`~fedaudit.types.ClientUpdate` carries a gradient (FedSGD) or a
pseudo-gradient ``(theta_global - theta_local) / (lr * U)`` (FedAvg): both are
in *gradient units*, and the server applies ``theta -= sum_k w_k lr U update_k``.
The transforms clip and noise in those same units, so the clip ``C`` is the
L2 sensitivity of what is released and the noise standard deviation is
``noise_multiplier * C`` in the same units. The reference code of Feng et al.
clipped gradients but added the noise to the *parameters* with a sensitivity
computed from the gradient clip, omitting the factor ``lr * U`` that converts
gradient units into parameter units; see ``docs/dp.md``.
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fedaudit.exceptions import InvalidParameterError
from fedaudit.types import ClientUpdate

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "ACCOUNTANTS",
    "ADJACENCIES",
    "ClipNorm",
    "DPSGDConfig",
    "DPSGDTrainer",
    "GRAD_SAMPLE_MODES",
    "GaussianNoise",
    "LocalDP",
    "OPTIMIZERS",
    "UserLevelDP",
    "analytic_gaussian_sigma",
    "calibrate_noise",
    "clip_by_global_norm",
    "epsilon",
    "gaussian_delta",
    "global_l2_norm",
    "per_client_epsilon",
    "udp_epsilon",
    "udp_per_client_epsilon",
]

#: Privacy accountants of Opacus that can be selected by key.
ACCOUNTANTS: tuple[str, ...] = ("rdp", "prv")
#: Neighbouring relations for per-client accounting.
ADJACENCIES: tuple[str, ...] = ("add_remove", "replace")
#: Opacus per-sample gradient machinery used by :class:`DPSGDTrainer`.
GRAD_SAMPLE_MODES: tuple[str, ...] = ("ghost", "hooks")
#: Local optimisers of :meth:`DPSGDTrainer.train`.
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")


# -- validation helpers -----------------------------------------------------------------------


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_real(
    value: object, name: str, caller: str, *, low: float, low_open: bool, high: float = math.inf,
    high_open: bool = False,
) -> float:
    ok = _is_real(value) and not math.isnan(float(value))  # type: ignore[arg-type]
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open or math.isinf(high) else "]"
        hi_text = "inf" if math.isinf(high) else f"{high:g}"
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be a real number in {lo}{low:g}, {hi_text}{hi}. "
            f"Got {value!r} instead."
        )
    return float(value)  # type: ignore[arg-type]


def _check_positive(value: object, name: str, caller: str) -> float:
    v = _check_real(value, name, caller, low=0.0, low_open=True)
    if math.isinf(v):
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be a finite real number > 0. Got {value!r} instead."
        )
    return v


def _check_nonnegative(value: object, name: str, caller: str) -> float:
    v = _check_real(value, name, caller, low=0.0, low_open=False)
    if math.isinf(v):
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be a finite real number >= 0. Got {value!r} instead."
        )
    return v


def _check_delta(value: object, caller: str) -> float:
    return _check_real(value, "delta", caller, low=0.0, low_open=True, high=1.0, high_open=True)


def _check_sample_rate(value: object, name: str, caller: str) -> float:
    return _check_real(value, name, caller, low=0.0, low_open=True, high=1.0)


def _check_steps(value: object, name: str, caller: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be an integer >= 0. Got {value!r} instead."
        )
    return int(value)


def _check_choice(value: object, name: str, caller: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be one of {list(choices)}. Got {value!r} instead."
        )
    return value


def _require_opacus() -> None:
    try:
        import opacus  # noqa: F401
    except ImportError as err:  # pragma: no cover - opacus is installed in dev
        raise ImportError(
            "Privacy accounting and DP-SGD need Opacus; install it with: pip install 'fedaudit[dp]'"
        ) from err


# -- array kernels ----------------------------------------------------------------------------


def global_l2_norm(arrays: Mapping[str, np.ndarray]) -> float:
    """L2 norm of all arrays taken together, as if flattened into one vector.

    Parameters
    ----------
    arrays
        Parameter name to array.

    Returns
    -------
    float
        ``sqrt(sum over arrays of sum(a**2))``, accumulated in float64.

    Examples
    --------
    >>> global_l2_norm({"w": np.array([3.0]), "b": np.array([[4.0]])})
    5.0
    """
    total = 0.0
    for a in arrays.values():
        flat = np.asarray(a, dtype=np.float64).reshape(-1)
        total += float(flat @ flat)
    return math.sqrt(total)


def clip_by_global_norm(
    arrays: Mapping[str, np.ndarray], max_norm: float
) -> tuple[dict[str, np.ndarray], float]:
    """Scale all arrays by one factor so that their global L2 norm is at most ``max_norm``.

    Parameters
    ----------
    arrays
        Parameter name to array; not modified.
    max_norm
        Largest allowed global L2 norm, > 0.

    Returns
    -------
    clipped : dict[str, numpy.ndarray]
        New arrays, same shapes and dtypes, in the input's order.
    scale : float
        The factor applied, ``min(1, max_norm / norm)`` (1 for an all-zero update).

    Raises
    ------
    InvalidParameterError
        If ``max_norm`` is not a finite number > 0, or the arrays hold NaN or infinity.

    Examples
    --------
    >>> out, scale = clip_by_global_norm({"w": np.array([3.0, 4.0])}, 1.0)
    >>> [round(v, 6) for v in out["w"].tolist()], scale
    ([0.6, 0.8], 0.2)
    """
    max_norm = _check_positive(max_norm, "max_norm", "clip_by_global_norm")
    norm = global_l2_norm(arrays)
    if not math.isfinite(norm):
        raise InvalidParameterError(
            f"Cannot clip an update whose L2 norm is {norm!r}; it holds NaN or infinite values. "
            "Check the local training for divergence."
        )
    scale = 1.0 if norm <= max_norm else max_norm / norm

    def scaled(factor: float) -> dict[str, np.ndarray]:
        return {
            name: (np.asarray(a, dtype=np.float64) * factor).astype(np.asarray(a).dtype, copy=False)
            for name, a in arrays.items()
        }

    clipped = scaled(scale)
    # Casting back to float32 can round the norm up past max_norm by a few ulps: shrink until it fits.
    while scale < 1.0 and global_l2_norm(clipped) > max_norm:
        scale *= 1.0 - 2.0**-22
        clipped = scaled(scale)
    return clipped, scale


def _add_gaussian(
    arrays: Mapping[str, np.ndarray], std: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, a in arrays.items():
        values = np.asarray(a)
        noisy = values.astype(np.float64) + rng.normal(0.0, std, size=values.shape)
        out[name] = noisy.astype(values.dtype if values.dtype.kind == "f" else np.float32)
    return out


def _check_rng(rng: object, caller: str) -> None:
    if not isinstance(rng, np.random.Generator):
        raise InvalidParameterError(
            f"The 'rng' argument of {caller} must be a numpy.random.Generator. Got {type(rng).__name__} instead; "
            "pass np.random.default_rng(seed)."
        )


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

    sigma = _check_positive(sigma, "sigma", "gaussian_delta")
    epsilon = _check_nonnegative(epsilon, "epsilon", "gaussian_delta")
    sensitivity = _check_positive(sensitivity, "sensitivity", "gaussian_delta")
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

    epsilon = _check_positive(epsilon, "epsilon", "analytic_gaussian_sigma")
    delta = _check_delta(delta, "analytic_gaussian_sigma")
    sensitivity = _check_positive(sensitivity, "sensitivity", "analytic_gaussian_sigma")

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


# -- transforms -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ClipNorm:
    """Update transform: scale the whole update so its global L2 norm is at most ``max_norm``.

    The norm is taken over every parameter together (flat clipping), as in
    the user-level DP of McMahan et al., "Learning differentially private
    recurrent language models" (ICLR 2018) and of Feng, Peri and Narayanan
    (2022). ``max_norm`` is in the update's units (gradient units).

    Parameters
    ----------
    max_norm
        Clip bound, a finite number > 0.

    Examples
    --------
    >>> ClipNorm(max_norm=0.25).describe()
    {'name': 'clip_norm', 'max_norm': 0.25}
    """

    max_norm: float

    def __post_init__(self) -> None:
        _check_positive(self.max_norm, "max_norm", "ClipNorm")

    def __call__(self, update: ClientUpdate, rng: np.random.Generator) -> ClientUpdate:
        """Return a clipped copy of ``update``; ``rng`` is unused (clipping is deterministic)."""
        clipped, _ = clip_by_global_norm(update.arrays, self.max_norm)
        return update.with_arrays(clipped)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the run configuration."""
        return {"name": "clip_norm", "max_norm": float(self.max_norm)}


@dataclass(frozen=True, kw_only=True)
class GaussianNoise:
    """Update transform: add independent N(0, std^2) noise to every value of the update.

    Noise alone gives no differential-privacy guarantee (the sensitivity of an
    unclipped update is unbounded); combine it with :class:`ClipNorm`, or use
    :class:`UserLevelDP` / :class:`LocalDP`.

    Parameters
    ----------
    std
        Standard deviation in the update's units, a finite number >= 0.

    Examples
    --------
    >>> GaussianNoise(std=0.01).describe()
    {'name': 'gaussian_noise', 'std': 0.01}
    """

    std: float

    def __post_init__(self) -> None:
        _check_nonnegative(self.std, "std", "GaussianNoise")

    def __call__(self, update: ClientUpdate, rng: np.random.Generator) -> ClientUpdate:
        """Return a noisy copy of ``update``; noise is drawn from ``rng``."""
        _check_rng(rng, "GaussianNoise")
        return update.with_arrays(_add_gaussian(update.arrays, float(self.std), rng))

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the run configuration."""
        return {"name": "gaussian_noise", "std": float(self.std)}


@dataclass(frozen=True, kw_only=True)
class UserLevelDP:
    """Update transform: user-level DP (UDP), clip the whole update then add Gaussian noise.

    Implementation based on Feng, Peri and Narayanan, "User-level differential
    privacy against attribute inference attack of speech emotion recognition
    in federated learning" (2022), itself following McMahan et al. (ICLR 2018)
    and Wei et al. (IEEE TIFS 2020). The update (gradient or FedAvg
    pseudo-gradient, in gradient units) is clipped to global L2 norm ``clip``
    and N(0, (noise_multiplier * clip)^2) is added to every value, so the
    sensitivity (``clip``) and the noise are in the same units.

    The reference code of the paper clipped per-step gradients to C but added
    noise to the uploaded *parameters* with sigma computed from the gradient
    sensitivity 2C/|D_k|, omitting the learning rate: in parameter units the
    sensitivity is ``lr * U`` times smaller, so its reported epsilon does not
    match the noise it added. Here no conversion is needed.

    Privacy: each release is a Gaussian mechanism with noise multiplier
    ``noise_multiplier`` relative to the add/remove sensitivity ``clip``
    (``noise_multiplier / 2`` relative to the replace sensitivity ``2 clip``
    that a local adversary distinguishing two datasets of one client faces).
    Use :func:`udp_epsilon` for the amplified central guarantee over rounds
    and :func:`udp_per_client_epsilon` for what the server sees of each client.

    Parameters
    ----------
    clip
        Global L2 clip bound C, finite, > 0 (Feng et al. used 0.25).
    noise_multiplier
        z >= 0; the noise standard deviation is ``z * clip``.

    Examples
    --------
    >>> UserLevelDP(clip=0.25, noise_multiplier=1.0).noise_std
    0.25
    """

    clip: float
    noise_multiplier: float

    def __post_init__(self) -> None:
        _check_positive(self.clip, "clip", "UserLevelDP")
        _check_nonnegative(self.noise_multiplier, "noise_multiplier", "UserLevelDP")

    @property
    def noise_std(self) -> float:
        """Standard deviation of the added noise, in gradient units."""
        return float(self.noise_multiplier) * float(self.clip)

    def __call__(self, update: ClientUpdate, rng: np.random.Generator) -> ClientUpdate:
        """Return a clipped, noisy copy of ``update``; noise is drawn from ``rng``."""
        _check_rng(rng, "UserLevelDP")
        clipped, _ = clip_by_global_norm(update.arrays, self.clip)
        return update.with_arrays(_add_gaussian(clipped, self.noise_std, rng))

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the run configuration."""
        return {
            "name": "user_level_dp", "clip": float(self.clip), "noise_multiplier": float(self.noise_multiplier),
            "noise_std": self.noise_std, "units": "gradient",
        }


@dataclass(frozen=True, kw_only=True)
class LocalDP:
    """Update transform: local DP, clip then add noise so one release is (epsilon, delta)-DP.

    The LDP-FL setting of Mohammadi et al., "Differentially private federated
    learning for speech emotion recognition with client selection" (FedCSIS
    2023): every update a client sends is (epsilon, delta)-DP on its own,
    against anyone who sees it. The neighbouring relation is "any two datasets
    of the client", so the L2 sensitivity of the clipped update is ``2 clip``,
    and the noise is calibrated with the analytic Gaussian mechanism of Balle
    and Wang (ICML 2018), solved with scipy (:func:`analytic_gaussian_sigma`).
    The epsilon is per round: a client that sends k updates has spent k
    releases (compose them with :func:`udp_per_client_epsilon` using
    ``adjacency="replace"``). Each update carries ``ldp_epsilon`` and
    ``ldp_delta`` in its ``extras``.

    Parameters
    ----------
    clip
        Global L2 clip bound C of the update (gradient units), finite, > 0.
    epsilon
        Per-release epsilon, finite, > 0 (Mohammadi et al. used 1.92).
    delta
        Per-release delta, in (0, 1) (Mohammadi et al. used 1e-5).

    Examples
    --------
    >>> ldp = LocalDP(clip=1.0, epsilon=1.0, delta=1e-5)
    >>> round(ldp.noise_std, 2)  # sensitivity 2
    7.46
    """

    clip: float
    epsilon: float
    delta: float = 1e-5

    def __post_init__(self) -> None:
        _check_positive(self.clip, "clip", "LocalDP")
        _check_positive(self.epsilon, "epsilon", "LocalDP")
        _check_delta(self.delta, "LocalDP")

    @property
    def sensitivity(self) -> float:
        """L2 sensitivity of the clipped update under replacement, ``2 clip``."""
        return 2.0 * float(self.clip)

    @property
    def noise_std(self) -> float:
        """Standard deviation of the added noise, in gradient units."""
        return analytic_gaussian_sigma(float(self.epsilon), float(self.delta), self.sensitivity)

    def __call__(self, update: ClientUpdate, rng: np.random.Generator) -> ClientUpdate:
        """Return a clipped, noisy copy of ``update``; noise is drawn from ``rng``."""
        _check_rng(rng, "LocalDP")
        clipped, _ = clip_by_global_norm(update.arrays, self.clip)
        noisy = _add_gaussian(clipped, self.noise_std, rng)
        extras = {**update.extras, "ldp_epsilon": float(self.epsilon), "ldp_delta": float(self.delta)}
        return replace(update, arrays=noisy, extras=extras)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the run configuration."""
        return {
            "name": "local_dp", "clip": float(self.clip), "epsilon_per_round": float(self.epsilon),
            "delta_per_round": float(self.delta), "sensitivity": self.sensitivity, "noise_std": self.noise_std,
            "calibration": "analytic_gaussian (Balle & Wang 2018)", "adjacency": "replace", "units": "gradient",
        }


# -- accounting -------------------------------------------------------------------------------


def _eps_from_history(history: Sequence[tuple[float, float, int]], delta: float, accountant: str) -> float:
    """Epsilon of a composition of Poisson-subsampled Gaussian steps (opacus accountant)."""
    _require_opacus()
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
    caller = "epsilon"
    z = _check_nonnegative(noise_multiplier, "noise_multiplier", caller)
    q = _check_sample_rate(sample_rate, "sample_rate", caller)
    steps = _check_steps(steps, "steps", caller)
    delta = _check_delta(delta, caller)
    accountant = _check_choice(accountant, "accountant", caller, ACCOUNTANTS)
    return _eps_from_history([(z, q, steps)], delta, accountant)


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
    target = _check_positive(target_epsilon, "target_epsilon", caller)
    q = _check_sample_rate(sample_rate, "sample_rate", caller)
    steps = _check_steps(steps, "steps", caller)
    if steps == 0:
        raise InvalidParameterError(
            f"The 'steps' parameter of {caller} must be an integer >= 1. Got {steps!r} instead; "
            "zero steps spend no privacy and need no noise."
        )
    delta = _check_delta(delta, caller)
    accountant = _check_choice(accountant, "accountant", caller, ACCOUNTANTS)

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
    delta = _check_delta(delta, caller)
    accountant = _check_choice(accountant, "accountant", caller, ACCOUNTANTS)
    adjacency = _check_choice(adjacency, "adjacency", caller, ADJACENCIES)
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
        z >= 0 of :class:`UserLevelDP`.
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
    caller = "udp_epsilon"
    z = _check_nonnegative(noise_multiplier, "noise_multiplier", caller)
    q = _check_sample_rate(client_fraction, "client_fraction", caller)
    rounds = _check_steps(rounds, "rounds", caller)
    delta = _check_delta(delta, caller)
    accountant = _check_choice(accountant, "accountant", caller, ACCOUNTANTS)
    return _eps_from_history([(z, q, rounds)], delta, accountant)


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
        z of :class:`UserLevelDP`, scalar or per row; for :class:`LocalDP` pass
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


# -- DP-SGD -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DPSGDConfig:
    """Sample-level DP-SGD settings for client training (Abadi et al., CCS 2016).

    Give exactly one of ``noise_multiplier`` and ``target_epsilon``; with a
    target, call :meth:`resolve` to get the calibrated noise multiplier before
    building a :class:`DPSGDTrainer`.

    Parameters
    ----------
    noise_multiplier
        Noise standard deviation over ``max_grad_norm``, >= 0.
    target_epsilon
        Epsilon to reach at the end of training, > 0.
    max_grad_norm
        Per-sample gradient clip bound, > 0.
    delta
        Target delta, in (0, 1).
    accountant
        ``"rdp"`` or ``"prv"``.
    grad_sample_mode
        ``"ghost"`` (Opacus ghost clipping: per-sample norms without
        per-sample gradients, two backward passes) or ``"hooks"`` (Opacus'
        default per-sample gradient hooks).

    Examples
    --------
    >>> DPSGDConfig(noise_multiplier=1.0).grad_sample_mode
    'ghost'
    """

    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    accountant: str = "rdp"
    grad_sample_mode: str = "ghost"

    def __post_init__(self) -> None:
        caller = "DPSGDConfig"
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise InvalidParameterError(
                f"{caller} needs exactly one of 'noise_multiplier' and 'target_epsilon'. "
                f"Got noise_multiplier={self.noise_multiplier!r} and target_epsilon={self.target_epsilon!r} instead."
            )
        if self.noise_multiplier is not None:
            _check_nonnegative(self.noise_multiplier, "noise_multiplier", caller)
        if self.target_epsilon is not None:
            _check_positive(self.target_epsilon, "target_epsilon", caller)
        _check_positive(self.max_grad_norm, "max_grad_norm", caller)
        _check_delta(self.delta, caller)
        _check_choice(self.accountant, "accountant", caller, ACCOUNTANTS)
        _check_choice(self.grad_sample_mode, "grad_sample_mode", caller, GRAD_SAMPLE_MODES)

    def resolve(self, *, sample_rate: float, steps: int) -> DPSGDConfig:
        """Return the config with a noise multiplier (calibrated if a target epsilon was given).

        Parameters
        ----------
        sample_rate
            Batch size over the client's training set size (use the smallest
            client: its rate is the largest, so every client stays within budget).
        steps
            Total DP-SGD steps of a client over the whole run.

        Returns
        -------
        DPSGDConfig
            ``self`` if ``noise_multiplier`` was given, else a copy with the
            calibrated ``noise_multiplier`` and ``target_epsilon=None``.
        """
        if self.noise_multiplier is not None:
            return self
        z = calibrate_noise(
            float(self.target_epsilon), delta=self.delta, sample_rate=sample_rate, steps=steps,  # type: ignore[arg-type]
            accountant=self.accountant,
        )
        return replace(self, noise_multiplier=z, target_epsilon=None)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the run configuration."""
        return {"name": "dp_sgd", **{k: getattr(self, k) for k in self.__dataclass_fields__}}


def _short(name: str) -> str:
    return ".".join(name.split(".")[-2:])


class DPSGDTrainer:
    """DP-SGD on one client's mini-batches, with Opacus ghost clipping or per-sample hooks.

    Built once per run around a model of the run's architecture: the trainer
    keeps its own copy of that model wrapped by Opacus, and each call copies
    the weights of the model it is given into it, so wrapping (hook
    registration) is paid once. Per-sample gradients are clipped to
    ``max_grad_norm``, summed, noised with N(0, (noise_multiplier *
    max_grad_norm)^2) per coordinate and divided by the batch size (the
    Opacus ``DPOptimizer`` step). Noise and dropout masks come from torch's
    global random generator, so a run seeded with ``torch.manual_seed`` is
    reproducible. The model is run in training mode (dropout on).

    Implementation based on Abadi et al., "Deep learning with differential
    privacy" (CCS 2016) and the ghost clipping of Li et al., "Large language
    models can be strong differentially private learners" (ICLR 2022) as
    implemented in Opacus (``GradSampleModuleFastGradientClipping``,
    ``DPOptimizerFastGradientClipping``, ``DPLossFastGradientClipping``).

    Parameters
    ----------
    model
        A model of the run's architecture (copied; not modified). Its weights are irrelevant.
    config
        A resolved :class:`DPSGDConfig` (``noise_multiplier`` set).
    criterion
        Loss function with a ``reduction`` attribute; cross-entropy by default.

    Raises
    ------
    InvalidParameterError
        If the config has no noise multiplier, or Opacus cannot compute
        per-sample gradients of the model (e.g. BatchNorm).

    Examples
    --------
    >>> import torch
    >>> from fedaudit.fl.models import MLP
    >>> trainer = DPSGDTrainer(MLP(8, hidden=(4,), dropout=(0.0,)), DPSGDConfig(noise_multiplier=0.0))
    >>> g = trainer.gradient(MLP(8, hidden=(4,), dropout=(0.0,)), torch.randn(5, 8), torch.zeros(5, dtype=torch.long))
    >>> sorted(g)
    ['fc1.bias', 'fc1.weight', 'fc2.bias', 'fc2.weight']
    """

    def __init__(self, model: nn.Module, config: DPSGDConfig, *, criterion: nn.Module | None = None) -> None:
        _require_opacus()
        import torch
        from opacus.grad_sample import GradSampleModule, GradSampleModuleFastGradientClipping
        from opacus.validators import ModuleValidator

        if not isinstance(config, DPSGDConfig):
            raise InvalidParameterError(
                f"The 'config' parameter of DPSGDTrainer must be a DPSGDConfig. Got {type(config).__name__} instead."
            )
        if config.noise_multiplier is None:
            raise InvalidParameterError(
                "The 'config' parameter of DPSGDTrainer must have a noise multiplier. Got "
                f"target_epsilon={config.target_epsilon!r} instead; call config.resolve(sample_rate=..., steps=...) "
                "first."
            )
        worker = copy.deepcopy(model)
        errors = ModuleValidator.validate(worker, strict=False)
        if errors:
            raise InvalidParameterError(
                f"Opacus cannot train {type(model).__name__} with DP-SGD: {'; '.join(str(e) for e in errors)}. "
                "Replace the unsupported layers (e.g. BatchNorm by GroupNorm)."
            )
        self.config = config
        self._criterion = criterion if criterion is not None else torch.nn.CrossEntropyLoss()
        if config.grad_sample_mode == "ghost":
            self._module = GradSampleModuleFastGradientClipping(
                worker, batch_first=True, loss_reduction="mean", max_grad_norm=config.max_grad_norm,
                use_ghost_clipping=True,
            )
        else:
            self._module = GradSampleModule(worker, batch_first=True, loss_reduction="mean")
        self._params = {_short(n): p for n, p in self._module.named_parameters() if p.requires_grad}
        self._grad_optimizer = self._dp_optimizer(torch.optim.SGD(list(self._params.values()), lr=0.0))
        self.last_loss: float = math.nan

    def _dp_optimizer(self, optimizer: torch.optim.Optimizer) -> Any:
        from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping

        cls = DPOptimizerFastGradientClipping if self.config.grad_sample_mode == "ghost" else DPOptimizer
        return cls(
            optimizer, noise_multiplier=float(self.config.noise_multiplier),  # type: ignore[arg-type]
            max_grad_norm=float(self.config.max_grad_norm), expected_batch_size=1, loss_reduction="mean",
        )

    def _load(self, source: nn.Module) -> None:
        import torch

        src = {_short(n): p for n, p in source.named_parameters()}
        if src.keys() != self._params.keys():
            raise InvalidParameterError(
                f"The model given to DPSGDTrainer has parameters {sorted(src)}, but the trainer was built for "
                f"{sorted(self._params)}; build one trainer per architecture."
            )
        with torch.no_grad():
            for name, p in self._params.items():
                p.copy_(src[name])

    def _privatize(self, dp_optimizer: Any, x: torch.Tensor, y: torch.Tensor) -> bool:
        """Forward/backward on one batch; leave the privatized mean gradient in ``p.grad``."""
        from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

        if len(x) == 0:
            raise InvalidParameterError("DPSGDTrainer got an empty mini-batch; drop empty batches before training.")
        dp_optimizer.expected_batch_size = len(x)
        dp_optimizer.zero_grad(set_to_none=True)
        self._module.train()
        out = self._module(x)
        if self.config.grad_sample_mode == "ghost":
            loss = DPLossFastGradientClipping(self._module, dp_optimizer, self._criterion, "mean")(out, y)
        else:
            loss = self._criterion(out, y)
        with warnings.catch_warnings():
            # Opacus' hooks fire on module outputs because the inputs do not require gradients.
            warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            loss.backward()
        self.last_loss = float(loss.item())
        if self.config.grad_sample_mode == "hooks":
            return bool(dp_optimizer.pre_step())
        self._noise_and_scale(len(x))
        return True

    def _noise_and_scale(self, batch_size: int) -> None:
        """Ghost mode: ``p.grad`` holds the sum of clipped per-sample gradients; noise it, average it.

        The same arithmetic and the same draws from torch's global generator as
        ``DPOptimizerFastGradientClipping.pre_step`` (``(summed + N(0, (z C)^2)) /
        batch_size``, noise drawn parameter by parameter with ``torch.normal``),
        done in place: Opacus copies the summed gradient and allocates a zero
        tensor per parameter and step, which costs more than the two backward
        passes for this small model.
        """
        import torch

        std = float(self.config.noise_multiplier) * float(self.config.max_grad_norm)  # type: ignore[arg-type]
        with torch.no_grad():
            for p in self._params.values():
                if std != 0:
                    p.grad.add_(torch.normal(mean=0, std=std, size=p.grad.shape, device=p.grad.device))
                p.grad.div_(batch_size)

    def gradient(self, model_params_source: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
        """Privatized mini-batch gradient at the weights of ``model_params_source`` (for FedSGD).

        Parameters
        ----------
        model_params_source
            Model whose current weights are used; not modified.
        x, y
            One mini-batch (features, integer labels).

        Returns
        -------
        dict[str, numpy.ndarray]
            ``"fc1.weight"``-style name to the clipped, noised, averaged
            gradient (float32). The batch's mean loss is in :attr:`last_loss`.
        """
        self._load(model_params_source)
        self._privatize(self._grad_optimizer, x, y)
        return {name: p.grad.detach().numpy().copy() for name, p in self._params.items()}

    def train(
        self,
        model: nn.Module,
        batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
        *,
        optimizer: Literal["sgd", "adam"] = "sgd",
        lr: float,
    ) -> tuple[float, int]:
        """Train ``model`` in place with DP-SGD on ``batches`` (for FedAvg local epochs).

        Parameters
        ----------
        model
            Model to train; its weights are overwritten with the trained ones.
        batches
            Mini-batches ``(x, y)`` in the order to use them (all local epochs).
        optimizer
            ``"sgd"`` or ``"adam"`` (fresh state each call).
        lr
            Learning rate, > 0.

        Returns
        -------
        mean_loss : float
            Mean of the mini-batch losses.
        steps : int
            Number of optimiser steps taken (``U`` of the pseudo-gradient).
        """
        import torch

        caller = "DPSGDTrainer.train"
        _check_choice(optimizer, "optimizer", caller, OPTIMIZERS)
        lr = _check_positive(lr, "lr", caller)
        builders: dict[str, Callable[..., torch.optim.Optimizer]] = {
            "sgd": torch.optim.SGD, "adam": torch.optim.Adam,
        }
        self._load(model)
        dp_optimizer = self._dp_optimizer(builders[optimizer](list(self._params.values()), lr=lr))
        losses = []
        for x, y in batches:
            if self._privatize(dp_optimizer, x, y):
                dp_optimizer.original_optimizer.step()
            losses.append(self.last_loss)
        dst = {_short(n): p for n, p in model.named_parameters()}
        with torch.no_grad():
            for name, p in self._params.items():
                dst[name].copy_(p)
        return (float(np.mean(losses)) if losses else math.nan), len(losses)

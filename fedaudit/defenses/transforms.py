"""Update transforms for differential privacy: clipping and Gaussian noise.

Pure transforms ``(update, rng) -> update`` applied on the client before the
update leaves it: :class:`ClipNorm`, :class:`GaussianNoise`,
:class:`UserLevelDP` (clip the whole update, add Gaussian noise; the UDP of
Feng, Peri and Narayanan 2022) and :class:`LocalDP` (noise calibrated so that
one release is (epsilon, delta)-DP; the LDP-FL setting of Mohammadi et al.
2023), and the array kernels behind them (:func:`global_l2_norm`,
:func:`clip_by_global_norm`).

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

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedaudit.defenses._validation import check_delta, check_nonnegative, check_positive
from fedaudit.defenses.accounting import analytic_gaussian_sigma
from fedaudit.exceptions import InvalidParameterError
from fedaudit.types import ClientUpdate

__all__ = ["ClipNorm", "GaussianNoise", "LocalDP", "UserLevelDP", "clip_by_global_norm", "global_l2_norm"]


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
    max_norm = check_positive(max_norm, "max_norm", "clip_by_global_norm")
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
        check_positive(self.max_norm, "max_norm", "ClipNorm")

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
        check_nonnegative(self.std, "std", "GaussianNoise")

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
    Use :func:`~fedaudit.defenses.accounting.udp_epsilon` for the amplified
    central guarantee over rounds and
    :func:`~fedaudit.defenses.accounting.udp_per_client_epsilon` for what the
    server sees of each client.

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
        check_positive(self.clip, "clip", "UserLevelDP")
        check_nonnegative(self.noise_multiplier, "noise_multiplier", "UserLevelDP")

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
    releases (compose them with
    :func:`~fedaudit.defenses.accounting.udp_per_client_epsilon` using
    ``adjacency="replace"``); the ``"ldp"`` defense reports it per client.

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
        check_positive(self.clip, "clip", "LocalDP")
        check_positive(self.epsilon, "epsilon", "LocalDP")
        check_delta(self.delta, "LocalDP")

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
        return update.with_arrays(_add_gaussian(clipped, self.noise_std, rng))

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the run configuration."""
        return {
            "name": "local_dp", "clip": float(self.clip), "epsilon_per_round": float(self.epsilon),
            "delta_per_round": float(self.delta), "sensitivity": self.sensitivity, "noise_std": self.noise_std,
            "calibration": "analytic_gaussian (Balle & Wang 2018)", "adjacency": "replace", "units": "gradient",
        }

"""Magnitude pruning of client updates (Algorithm 2 of SEFL).

Each client zeroes, in every parameter array separately, the ``percent`` % of
entries with the smallest absolute value and keeps the rest. SEFL (Mohammadi,
Sinaei, Balador and Flammini, 2023) prunes before Paillier encryption so that
fewer values need encrypting and sending.

Pruning is not a privacy defense against the key holder: the entries it keeps
are the largest, most informative ones (for the first layer they carry the
input features of the batch), and they stay exactly as they were.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import ClassVar

import numpy as np

from fedaudit.defenses._validation import param_float
from fedaudit.defenses.registry import Defense, DefenseContext, register_defense
from fedaudit.exceptions import InvalidParameterError
from fedaudit.types import ClientUpdate, DefensePieces

__all__ = ["MagnitudePrune", "PruneDefense", "magnitude_prune_mask", "n_pruned", "prune_by_magnitude"]


def _check_percent(percent: object, caller: str) -> float:
    if (
        isinstance(percent, bool)
        or not isinstance(percent, numbers.Real)
        or not math.isfinite(float(percent))
        or not 0 <= float(percent) < 100
    ):
        raise InvalidParameterError(
            f"The 'percent' parameter of {caller} must be a real number in [0, 100). Got {percent!r} instead; "
            "pass e.g. percent=80 to zero the 80% smallest entries of each array."
        )
    return float(percent)


def n_pruned(size: int, percent: float) -> int:
    """Number of entries zeroed in an array of ``size`` entries.

    This is ``floor(size * percent / 100)``, computed exactly in rational
    arithmetic with ``percent`` read as the decimal it prints as (``18.4``
    means 184/10, not the nearest binary float), so that float rounding never
    moves it by one: 18.4 % of 375 entries is 69, where float arithmetic
    gives 68.

    Parameters
    ----------
    size
        Number of entries of the array.
    percent
        Percentage to prune, in [0, 100).

    Returns
    -------
    int
        The number of entries to zero.

    Examples
    --------
    >>> n_pruned(252_928, 80)
    202342
    >>> n_pruned(375, 18.4)
    69
    """
    percent = _check_percent(percent, "n_pruned")
    return math.floor(Fraction(int(size)) * Fraction(repr(percent)) / 100)


def magnitude_prune_mask(array: np.ndarray, percent: float) -> np.ndarray:
    """Boolean mask, of the array's shape, of the entries magnitude pruning zeroes.

    Exactly :func:`n_pruned` ``(array.size, percent)`` entries are selected: all
    entries whose absolute value is below the k-th smallest, then, among those
    equal to it, the ones with the lowest flat (C-order) index. The rule is
    deterministic and runs in linear time (``np.partition``).

    Parameters
    ----------
    array
        One parameter's values. NaN is refused; infinities count as large.
    percent
        Percentage of entries to select, in [0, 100).

    Returns
    -------
    numpy.ndarray
        Boolean mask, True where the entry is pruned.

    Raises
    ------
    InvalidParameterError
        If ``percent`` is outside [0, 100) or the array holds NaN.

    Examples
    --------
    >>> magnitude_prune_mask(np.array([0.3, -0.1, 0.2, 0.1]), 50).tolist()
    [False, True, False, True]
    """
    percent = _check_percent(percent, "magnitude_prune_mask")
    values = np.asarray(array)
    k = n_pruned(values.size, percent)
    mask = np.zeros(values.size, dtype=bool)
    magnitude = np.abs(values.reshape(-1))
    if np.isnan(magnitude).any():
        raise InvalidParameterError(
            f"Cannot prune an array of shape {values.shape} that holds {int(np.isnan(magnitude).sum())} NaN "
            "values; check the local training for divergence before pruning."
        )
    if k == 0:
        return mask.reshape(values.shape)
    kth = np.partition(magnitude, k - 1)[k - 1]
    below = magnitude < kth
    ties = np.flatnonzero(magnitude == kth)[: k - int(below.sum())]
    mask |= below
    mask[ties] = True
    return mask.reshape(values.shape)


def prune_by_magnitude(arrays: Mapping[str, np.ndarray], percent: float) -> dict[str, np.ndarray]:
    """Zero the ``percent`` % smallest-magnitude entries of each array (SEFL Algorithm 2).

    Each array is pruned on its own: an array of N entries gets exactly
    ``floor(N * percent / 100)`` entries set to zero (see
    :func:`magnitude_prune_mask` for the tie rule). The inputs are not
    modified; new arrays of the same shape and dtype are returned.

    Parameters
    ----------
    arrays
        Parameter name to array, e.g. ``ClientUpdate.arrays``.
    percent
        Percentage of entries to zero per array, in [0, 100).

    Returns
    -------
    dict[str, numpy.ndarray]
        Pruned copies, in the input's order.

    Raises
    ------
    InvalidParameterError
        If ``percent`` is outside [0, 100) or an array holds NaN.

    Examples
    --------
    >>> out = prune_by_magnitude({"w": np.array([[0.3, -0.1], [0.2, 0.05]])}, 50)
    >>> out["w"].tolist()
    [[0.3, 0.0], [0.2, 0.0]]
    """
    percent = _check_percent(percent, "prune_by_magnitude")
    pruned: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        values = np.array(array, copy=True)
        try:
            mask = magnitude_prune_mask(values, percent)
        except InvalidParameterError as err:
            err.add_note(f"while pruning parameter {name!r}")
            raise
        values[mask] = 0
        pruned[name] = values
    return pruned


@dataclass(frozen=True, kw_only=True)
class MagnitudePrune:
    """Update transform: magnitude pruning per parameter, as in SEFL.

    Implementation based on Algorithm 2 of Mohammadi et al., "Secure and
    Efficient Federated Learning by Combining Homomorphic Encryption and
    Gradient Pruning in Speech Emotion Recognition" (2023). Only
    ``update.arrays`` is pruned; the simulator recomputes FedAvg local weights
    from it.

    Parameters
    ----------
    percent
        Percentage of entries to zero in each parameter array, in [0, 100).

    Examples
    --------
    >>> prune = MagnitudePrune(percent=80)
    >>> prune.percent
    80
    """

    percent: float

    def __post_init__(self) -> None:
        _check_percent(self.percent, "MagnitudePrune")

    def __call__(self, update: ClientUpdate, rng: np.random.Generator) -> ClientUpdate:
        """Return a new update with pruned arrays; ``update`` is left unchanged.

        ``rng`` is unused (pruning is deterministic) and accepted for the
        transform protocol.
        """
        return update.with_arrays(prune_by_magnitude(update.arrays, self.percent))


@register_defense
@dataclass(frozen=True, kw_only=True)
class PruneDefense(Defense):
    """The ``"prune"`` defense: magnitude pruning of each layer on the client, without encryption.

    Implementation based on Algorithm 2 of Mohammadi et al. (2023); see
    :class:`MagnitudePrune`. Not a privacy defense against whoever sees the
    update: the entries it keeps are the largest, most informative ones.

    Parameters
    ----------
    percent
        Percentage of the smallest |values| of each parameter array zeroed, in [0, 100)
        (option ``prune_percent``).

    Examples
    --------
    >>> PruneDefense(percent=80.0).percent
    80.0
    """

    name: ClassVar[str] = "prune"
    description: ClassVar[str] = "magnitude pruning of each layer (SEFL Algorithm 2) without encryption"
    option_keys: ClassVar[Mapping[str, str]] = MappingProxyType({"percent": "prune_percent"})

    percent: float = 80.0

    def __post_init__(self) -> None:
        param_float(self, "percent", low=0.0, high=100.0, high_open=True)

    def build(self, context: DefenseContext) -> DefensePieces:
        return DefensePieces(transforms=(MagnitudePrune(percent=self.percent),),
                             settings={self.name: {"percent": self.percent}})

"""Tests of magnitude pruning (SEFL Algorithm 2)."""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedaudit.defenses.prune import MagnitudePrune, magnitude_prune_mask, n_pruned, prune_by_magnitude
from fedaudit.exceptions import InvalidParameterError
from fedaudit.types import ClientUpdate

percents = st.one_of(
    st.sampled_from([0, 20, 40, 60, 80, 99.9]),
    st.floats(min_value=0, max_value=100, exclude_max=True, allow_nan=False),
)
values = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=32)
arrays = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=12), elements=values)


def _expected_k(size: int, percent: float) -> int:
    # The specification: floor(N * pp / 100), exact, with pp the decimal it prints as.
    return math.floor(Decimal(size) * Decimal(repr(float(percent))) / 100)


@settings(max_examples=150, deadline=None)
@given(layers=st.lists(arrays, min_size=1, max_size=4), percent=percents)
def test_prunes_exactly_the_requested_count_of_the_smallest_per_layer(layers: list[np.ndarray], percent: float) -> None:
    # Prepare
    update = {f"layer{i}": a for i, a in enumerate(layers)}
    # Execute
    out = prune_by_magnitude(update, percent)
    # Assert
    assert list(out) == list(update)
    for name, a in update.items():
        mask = magnitude_prune_mask(a, percent)
        assert mask.shape == a.shape
        assert int(mask.sum()) == _expected_k(a.size, percent)
        assert out[name].shape == a.shape and out[name].dtype == a.dtype
        np.testing.assert_array_equal(out[name], np.where(mask, 0, a))
        if mask.any() and (~mask).any():
            assert np.abs(a[mask]).max() <= np.abs(a[~mask]).min()


def test_sefl_80_percent_on_the_emo_base_first_layer() -> None:
    rng = np.random.default_rng(0)
    g = rng.normal(size=(256, 988)).astype(np.float32)  # no zeros, no ties
    out = prune_by_magnitude({"fc1.weight": g}, 80)["fc1.weight"]
    assert n_pruned(g.size, 80) == 202_342
    assert int((out == 0).sum()) == 202_342
    kept = np.abs(g[out != 0])
    assert kept.min() >= np.quantile(np.abs(g), 0.8) - 1e-6


@pytest.mark.parametrize(("size", "percent", "k"), [(375, 18.4, 69), (125, 2.4, 3), (10, 99.9, 9), (7, 0, 0)])
def test_count_is_exact_where_float_arithmetic_is_off_by_one(size: int, percent: float, k: int) -> None:
    assert n_pruned(size, percent) == k
    assert int((prune_by_magnitude({"w": np.arange(1.0, size + 1)}, percent)["w"] == 0).sum()) == k


def test_ties_are_broken_by_lowest_flat_index_deterministically() -> None:
    a = np.array([[0.5, -0.5, 0.5], [0.1, 0.5, -0.5]], dtype=np.float32)
    mask = magnitude_prune_mask(a, 50)  # k = 3: 0.1 first, then the two earliest 0.5 ties
    assert mask.tolist() == [[True, True, False], [True, False, False]]
    assert magnitude_prune_mask(a, 50).tolist() == mask.tolist()


def test_percent_zero_returns_equal_copies() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = prune_by_magnitude({"w": a}, 0)
    np.testing.assert_array_equal(out["w"], a)
    assert not np.shares_memory(out["w"], a)


@pytest.mark.parametrize("bad", [-1, 100, 100.5, float("nan"), float("inf"), True, "80", None])
def test_invalid_percent_is_refused_with_a_clear_message(bad: object) -> None:
    with pytest.raises(InvalidParameterError, match=r"'percent' parameter of prune_by_magnitude .*\[0, 100\)"):
        prune_by_magnitude({"w": np.ones(3)}, bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"'percent' parameter of MagnitudePrune"):
        MagnitudePrune(percent=bad)  # type: ignore[arg-type]


def test_nan_is_refused_and_names_the_parameter() -> None:
    with pytest.raises(InvalidParameterError, match="NaN") as info:
        prune_by_magnitude({"fc2.bias": np.array([1.0, np.nan, 2.0])}, 50)
    assert any("fc2.bias" in note for note in info.value.__notes__)


def _update(arrays: dict[str, np.ndarray]) -> ClientUpdate:
    return ClientUpdate(
        server_round=3, client_id=7, kind="gradient", arrays=arrays, num_samples=20, local_steps=1, lr=0.1
    )


def test_magnitude_prune_is_pure() -> None:
    # Prepare
    rng = np.random.default_rng(1)
    arrays = {"fc1.weight": rng.normal(size=(8, 5)).astype(np.float32), "fc1.bias": rng.normal(size=8)}
    before = {k: v.copy() for k, v in arrays.items()}
    update = _update(arrays)
    # Execute
    out = MagnitudePrune(percent=60)(update, np.random.default_rng(0))
    # Assert: input untouched, output pruned, other fields carried over
    for name in arrays:
        np.testing.assert_array_equal(update.arrays[name], before[name])
        assert not np.shares_memory(out.arrays[name], update.arrays[name])
        assert int((out.arrays[name] == 0).sum()) == n_pruned(arrays[name].size, 60)
    assert out is not update
    assert (out.server_round, out.client_id, out.num_samples, out.lr) == (3, 7, 20, 0.1)


def test_magnitude_prune_is_frozen_and_keyword_only() -> None:
    prune = MagnitudePrune(percent=80)
    with pytest.raises(dataclasses.FrozenInstanceError):
        prune.percent = 10  # type: ignore[misc]
    with pytest.raises(TypeError):
        MagnitudePrune(80)  # type: ignore[misc]

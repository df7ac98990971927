"""The update statistics the attacks classify: the inversion identity and order invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedaudit.attacks.update_statistics import inversion_vector, layer_statistics


def test_inversion_identity_recovers_a_single_sample_exactly() -> None:
    torch.manual_seed(0)
    fc1, fc2 = torch.nn.Linear(30, 16), torch.nn.Linear(16, 4)
    x = torch.randn(1, 30)
    loss = torch.nn.functional.cross_entropy(fc2(torch.relu(fc1(x))), torch.tensor([2]))
    loss.backward()
    w = fc1.weight.grad.numpy()[None]
    b = fc1.bias.grad.numpy()[None]
    np.testing.assert_allclose(inversion_vector(w, b)[0], x.numpy()[0], rtol=1e-4, atol=1e-5)


def test_inversion_of_a_batch_is_an_affine_mixture_of_its_inputs() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 12))
    delta = rng.normal(size=(5, 7))
    w = (delta.T @ x)[None]
    b = delta.sum(axis=0)[None]
    v = inversion_vector(w, b)[0]
    weights = delta @ b[0] / (b[0] @ b[0])
    np.testing.assert_allclose(v, weights @ x, rtol=1e-10)
    assert weights.sum() == pytest.approx(1.0)


def test_layer_statistics_do_not_depend_on_hidden_unit_order() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 10, 6))
    b = rng.normal(size=(3, 10))
    perm = rng.permutation(10)
    np.testing.assert_allclose(layer_statistics(w, b), layer_statistics(w[:, perm], b[:, perm]), rtol=1e-10, atol=1e-12)
    assert layer_statistics(w, b).shape == (3, 3 * 6 + 4)
    # Scale-free apart from the two log-norms.
    scaled = layer_statistics(7 * w, 7 * b)
    base = layer_statistics(w, b)
    np.testing.assert_allclose(np.delete(scaled, [18, 19], axis=1), np.delete(base, [18, 19], axis=1), atol=1e-10)

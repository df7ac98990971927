"""Analytic recovery through the input layer: exact where the algebra says so, measured where it is not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedaudit.attacks.reconstruct import RECONSTRUCTIONS, ObservedUpdate, ReconstructionContext
from fedaudit.attacks.reconstruct.analytic import AnalyticInputs, input_layer, next_relu_layer, separate_inputs
from fedaudit.attacks.reconstruct.scores import match_vectors
from fedaudit.exceptions import InvalidParameterError
from fedaudit.models import MLP, parameter_shapes


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gradient(
    x: np.ndarray, y: np.ndarray, *, seed: int, hidden=(256, 128), train: bool = True
) -> dict[str, np.ndarray]:
    """Autograd gradient of the mean cross-entropy of a batch through the simulator's MLP."""
    torch.manual_seed(seed)
    model = MLP(x.shape[1], hidden=hidden)
    model.train(train)
    loss = nn.CrossEntropyLoss()(model(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    return {name.removeprefix("layers."): p.grad.numpy().copy() for name, p in model.named_parameters()}


def _batch(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, 4, n)


def _context(d: int = 988, hidden=(256, 128)) -> ReconstructionContext:
    shapes = parameter_shapes(MLP(d, hidden=hidden))
    return ReconstructionContext(config={"model": "mlp", "local_epochs": 1}, parameter_shapes=shapes)


def _update(
    grads: dict[str, np.ndarray], *, row: int, n: int, kind: str = "gradient", steps: int = 1
) -> ObservedUpdate:
    return ObservedUpdate(
        row=row, client_id=row % 3, server_round=row, kind=kind, arrays=grads, num_samples=n, local_steps=steps,
        lr=0.1,
    )


def test_registered_as_a_feature_method():
    assert RECONSTRUCTIONS["analytic"] is AnalyticInputs
    assert AnalyticInputs.produces == frozenset({"features"})
    assert not AnalyticInputs.needs_model and not AnalyticInputs.needs_globals


def test_one_sample_gradient_is_recovered_exactly():
    x, y = _batch(1, 988, seed=3)
    grads = _gradient(x, y, seed=3)
    rec = AnalyticInputs().prepare(_context()).reconstruct(_update(grads, row=0, n=1))
    assert rec.features.shape == (1, 988)
    np.testing.assert_allclose(rec.features[0], x[0], rtol=0, atol=1e-4 * np.abs(x).max())
    assert rec.info["n_estimated"] == 1 and rec.info["n_exact"] == 1 and rec.info["complete"] == 1.0
    # every row of dW1 over its bias entry is the input (rows of units the sample activates)
    w, b = grads["fc1.weight"], grads["fc1.bias"]
    i = int(np.argmax(np.abs(b)))
    np.testing.assert_allclose(w[i] / b[i], x[0], atol=1e-4 * np.abs(x).max())


@pytest.mark.parametrize("hidden", [(256, 128), (64, 32)])
def test_batch_of_four_random_inputs_is_separated(hidden):
    """Four random inputs behind one real MLP gradient: every member recovered (cosine > 0.99), over seeds."""
    method = AnalyticInputs().prepare(_context(hidden=hidden))
    cosines, exact = [], []
    for seed in range(10):
        x, y = _batch(4, 988, seed)
        rec = method.reconstruct(_update(_gradient(x, y, seed=seed, hidden=hidden), row=seed, n=4))
        match = match_vectors(rec.features, x)
        assert rec.info["n_estimated"] == 4
        cosines.append(match.cosine.min())
        exact.append(rec.info["complete"])
    assert min(cosines) > 0.99, cosines
    assert np.mean(exact) == 1.0


def test_batch_of_twenty_is_separated_exactly_through_the_second_layer():
    """The FedSGD setting of the publication (batch 20): measured 10 of 10 complete while developing; 4 here."""
    method = AnalyticInputs().prepare(_context())
    for seed in range(4):
        x, y = _batch(20, 988, 100 + seed)
        rec = method.reconstruct(_update(_gradient(x, y, seed=seed), row=seed, n=20))
        match = match_vectors(rec.features, x)
        assert rec.info["second_layer"] == 1.0
        assert rec.info["complete"] == 1.0, rec.info
        assert match.cosine.min() > 0.9999
        # the weights are those of the inversion vector's mixture
        assert rec.feature_weights.sum() == pytest.approx(1.0, abs=1e-6)


def test_without_the_second_layer_a_small_batch_is_still_separated():
    x, y = _batch(4, 988, seed=7)
    rec = AnalyticInputs(second_layer=False).prepare(_context()).reconstruct(
        _update(_gradient(x, y, seed=7), row=0, n=4)
    )
    assert rec.info["second_layer"] == 0.0
    assert match_vectors(rec.features, x).cosine.min() > 0.99


def test_one_local_sgd_epoch_is_separated_like_a_batch():
    """FedAvg with local SGD, one epoch of two steps: the pseudo-gradient still holds one sparse column per sample."""
    d, hidden, lr = 988, (256, 128), 0.05
    x, y = _batch(8, d, seed=11)
    torch.manual_seed(11)
    model = MLP(d, hidden=hidden)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    for rows in (slice(0, 4), slice(4, 8)):  # plain SGD steps
        model.zero_grad()
        nn.CrossEntropyLoss()(model(torch.from_numpy(x[rows])), torch.from_numpy(y[rows])).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
    pseudo = {
        n.removeprefix("layers."): ((start[n] - p.detach()) / (lr * 2)).numpy() for n, p in model.named_parameters()
    }
    rec = AnalyticInputs().prepare(_context()).reconstruct(
        _update(pseudo, row=0, n=8, kind="pseudo_gradient", steps=2)
    )
    assert rec.info["n_estimated"] == 8
    assert match_vectors(rec.features, x).cosine.min() > 0.999


def _noisy_cosines(batch: int, sigmas: list[float], n_updates: int) -> np.ndarray:
    """Mean matched cosine per update and noise level (same noise draw, scaled: paired across levels)."""
    grads, xs = [], []
    for s in range(n_updates):
        x, y = _batch(batch, 100, 500 + s)
        grads.append(_gradient(x, y, seed=s, hidden=(64, 32)))
        xs.append(x)
    names = ("fc1.weight", "fc1.bias", "fc2.weight")
    stacks = {n: np.stack([g[n] for g in grads]) for n in names}
    scale = float(np.abs(stacks["fc1.weight"]).mean())
    rng = np.random.default_rng(0)
    noise = {n: rng.normal(size=a.shape).astype(np.float32) for n, a in stacks.items()}
    out = np.zeros((n_updates, len(sigmas)))
    for j, mult in enumerate(sigmas):
        noisy = {n: stacks[n] + mult * scale * noise[n] for n in names}
        seps = separate_inputs(
            noisy["fc1.weight"], noisy["fc1.bias"], max_inputs=batch, next_weight=noisy["fc2.weight"]
        )
        out[:, j] = [match_vectors(sep.features, x).cosine.mean() for sep, x in zip(seps, xs, strict=True)]
    return out


@pytest.mark.parametrize(
    ("batch", "sigmas", "n_updates"),
    [(1, [0.0, 2.0, 8.0, 32.0], 48), (4, [0.0, 0.01, 1.0, 3.0], 24)],
)
def test_reconstructions_degrade_monotonically_with_gaussian_noise(batch, sigmas, n_updates):
    """Gaussian noise on the update (sigma in units of the mean |dW1|): the mean cosine falls at every step."""
    cos = _noisy_cosines(batch, sigmas, n_updates)
    means = cos.mean(axis=0)
    assert means[0] > 0.9999  # exact without noise
    steps = cos[:, :-1] - cos[:, 1:]  # paired drops, per update
    drop = steps.mean(axis=0)
    se = steps.std(axis=0, ddof=1) / np.sqrt(n_updates)
    assert np.all(drop > 0.02), means
    assert np.all(drop > 2 * se), (drop, se)


def test_results_do_not_depend_on_what_else_is_in_the_chunk():
    grads = [_gradient(*_batch(4, 988, s), seed=s) for s in range(3)]
    updates = [_update(g, row=10 + i, n=4) for i, g in enumerate(grads)]
    together = list(AnalyticInputs(chunk=3).prepare(_context()).reconstruct_many(updates))
    alone = [AnalyticInputs(chunk=1).prepare(_context()).reconstruct(u) for u in updates]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(np.sort(a.features, axis=0), np.sort(b.features, axis=0), atol=1e-6)
        assert a.info == b.info


def test_the_count_is_capped_by_the_samples_and_the_local_epochs():
    method = AnalyticInputs().prepare(
        ReconstructionContext(config={"model": "mlp", "local_epochs": 3}, parameter_shapes=_context().parameter_shapes)
    )
    grads = _gradient(*_batch(2, 988, 0), seed=0)
    assert method.distinct_inputs(_update(grads, row=0, n=20)) == 20
    assert method.distinct_inputs(_update(grads, row=0, n=60, kind="pseudo_gradient", steps=9)) == 20
    assert AnalyticInputs(max_inputs=5).prepare(_context()).distinct_inputs(_update(grads, row=0, n=20)) == 5


def test_a_convolutional_input_layer_is_refused_in_one_sentence():
    shapes = {"conv1.weight": (16, 13, 5), "conv1.bias": (16,), "fc1.weight": (4, 16), "fc1.bias": (4,)}
    with pytest.raises(InvalidParameterError, match="not a linear layer with a bias"):
        AnalyticInputs().prepare(ReconstructionContext(config={"model": "cnn"}, parameter_shapes=shapes))
    assert input_layer({"fc1.weight": (8, 3), "fc1.bias": (8,)}) == "fc1"
    assert next_relu_layer({"fc1.weight": (8, 3), "fc1.bias": (8,), "fc2.weight": (4, 8)}, "mlp") == "fc2"
    assert next_relu_layer({"fc1.weight": (8, 3), "fc1.bias": (8,), "fc2.weight": (4, 8)}, "lstm") is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"walks": -1}, "'walks'"), ({"chunk": 0}, "'chunk'"), ({"max_inputs": 0}, "'max_inputs'"),
     ({"rounds": 1.5}, "'rounds'")],
)
def test_bad_parameters_are_refused(kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        AnalyticInputs(**kwargs).prepare(_context())


def test_reconstruct_before_prepare_is_refused():
    with pytest.raises(InvalidParameterError, match="prepare"):
        AnalyticInputs().reconstruct(_update(_gradient(*_batch(1, 988, 0), seed=0), row=0, n=1))


def test_bad_shapes_are_refused():
    with pytest.raises(InvalidParameterError, match="weight updates"):
        separate_inputs(np.zeros((2, 3, 4, 5)), np.zeros((2, 3)), max_inputs=1)
    with pytest.raises(InvalidParameterError, match="max_inputs"):
        separate_inputs(np.zeros((3, 4)), np.zeros(3), max_inputs=0)

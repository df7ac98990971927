"""Model inversion ("model"): class representatives of a trained model lie nearest their own class."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from fedaudit.attacks.reconstruct import RECONSTRUCTIONS, ObservedUpdate, ReconstructionContext
from fedaudit.attacks.reconstruct.model_inversion import ModelInversion, invert_model
from fedaudit.exceptions import InvalidParameterError
from fedaudit.models import build_model, parameter_shapes

D, HIDDEN, C = 16, (32, 16), 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _context() -> ReconstructionContext:
    model = build_model("mlp", D, hidden=HIDDEN, dropout=(0.0, 0.0), n_classes=C)
    config = {"model": "mlp", "hidden": list(HIDDEN), "dropout": [0.0, 0.0], "n_classes": C}
    return ReconstructionContext(config=config, parameter_shapes=parameter_shapes(model), data={"n_features": D})


def _separable(seed: int = 0, per_class: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four Gaussian classes with means 3 e_c in 16 dimensions (unit noise): linearly separable in practice."""
    rng = np.random.default_rng(seed)
    means = np.zeros((C, D), np.float32)
    means[np.arange(C), np.arange(C)] = 3.0
    y = np.repeat(np.arange(C), per_class)
    x = (means[y] + rng.normal(size=(len(y), D))).astype(np.float32)
    return x, y, means


def _weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: p.detach().numpy().copy() for k, p in zip(parameter_shapes(model), model.parameters())}


@functools.cache
def _trained() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """(initial weights, weights after 150 full-batch Adam steps, training accuracy)."""
    x, y, _ = _separable()
    torch.manual_seed(0)
    model = build_model("mlp", D, hidden=HIDDEN, dropout=(0.0, 0.0), n_classes=C)
    start = _weights(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    accuracy = float((model(xt).argmax(1) == yt).float().mean())
    return start, _weights(model), accuracy


def _nearest_mean(reps: np.ndarray, means: np.ndarray) -> np.ndarray:
    return np.linalg.norm(reps[:, None] - means[None], axis=2).argmin(1)


def test_registered_with_its_contract():
    cls = RECONSTRUCTIONS["model"]
    assert cls is ModelInversion
    assert cls.produces == {"features"} and cls.needs_model and cls.needs_globals


def test_class_representatives_of_a_trained_model_are_nearest_their_class_mean():
    start, trained, accuracy = _trained()
    assert accuracy > 0.95
    _, _, means = _separable()
    reps = np.stack([invert_model(trained, _context(), target_class=c, iterations=200, seed=1) for c in range(C)])
    assert reps.shape == (C, D)
    assert _nearest_mean(reps, means).tolist() == list(range(C))
    # the untrained model has no notion of the classes: its representatives are not arranged so
    untrained = np.stack([invert_model(start, _context(), target_class=c, iterations=200, seed=1) for c in range(C)])
    assert _nearest_mean(untrained, means).tolist() != list(range(C))


def test_the_best_start_and_the_mean_of_starts_agree_on_the_class():
    _, trained, _ = _trained()
    _, _, means = _separable()
    reps = np.stack([invert_model(trained, _context(), target_class=c, iterations=200, combine="best", seed=2)
                     for c in range(C)])
    assert _nearest_mean(reps, means).tolist() == list(range(C))


def test_a_client_update_is_inverted_through_the_clients_local_model():
    """The update carries the trained model as local weights: global - lr U update = trained."""
    start, trained, _ = _trained()
    _, _, means = _separable()
    lr, steps = 0.01, 150
    arrays = {k: ((start[k].astype(np.float64) - trained[k]) / (lr * steps)).astype(np.float32) for k in start}
    update = ObservedUpdate(row=3, client_id=1, server_round=0, kind="pseudo_gradient", arrays=arrays,
                            num_samples=200, local_steps=steps, lr=lr, global_weights=start)
    rec = ModelInversion(iterations=200, seed=0).prepare(_context()).reconstruct(update)
    assert rec.method == "model" and rec.row == 3 and rec.client_id == 1
    assert rec.features.shape == (C, D) and rec.info["class_order"] == (0, 1, 2, 3)
    assert _nearest_mean(rec.features, means).tolist() == list(range(C))
    assert all(rec.info[f"confidence_{c}"] > 0.9 for c in range(C)), rec.info
    subset = ModelInversion(iterations=50, classes=[2, 0], source="global").prepare(_context()).reconstruct(update)
    assert subset.features.shape == (2, D) and subset.info["class_order"] == (2, 0)
    assert subset.info["source"] == "global"


def test_bad_input_is_one_sentence():
    start, _, _ = _trained()
    with pytest.raises(InvalidParameterError, match="target_class"):
        invert_model(start, _context(), target_class=C)
    with pytest.raises(InvalidParameterError, match="combine"):
        invert_model(start, _context(), target_class=0, combine="median")
    with pytest.raises(InvalidParameterError, match="classes"):
        ModelInversion(classes=[0, 9]).prepare(_context())
    with pytest.raises(InvalidParameterError, match="source"):
        ModelInversion(source="server").prepare(_context())
    bare = ObservedUpdate(row=0, client_id=0, server_round=0, kind="gradient", arrays=start, num_samples=1,
                          local_steps=1, lr=0.1)
    with pytest.raises(InvalidParameterError, match="no global weights"):
        ModelInversion(iterations=5).prepare(_context()).reconstruct(bare)

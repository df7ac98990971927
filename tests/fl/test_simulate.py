from __future__ import annotations

import numpy as np
import pytest
import torch

from fedaudit.config import FLConfig
from fedaudit.exceptions import InvalidParameterError
from fedaudit.fl import pseudo_gradient, simulate
from fedaudit.models import MLP
from fedaudit.hooks import BaseHook
from fedaudit.fl.simulate import _Federation
from fedaudit.data.clients import split_clients
from fedaudit.types import ClientUpdate, DefensePieces
from tests.conftest import make_table


class Collect(BaseHook):
    def __init__(self) -> None:
        self.updates: list[ClientUpdate] = []
        self.globals: list[dict[str, np.ndarray]] = []
        self.info = None
        self.result = None

    def on_run_start(self, event):
        self.info = event

    def on_round_start(self, event):
        self.globals.append({k: v.copy() for k, v in event.global_weights.items()})

    def on_client_update(self, update):
        self.updates.append(update)

    def on_run_end(self, event):
        self.result = event.result


def test_mlp_he_initialisation_and_eval_mode_disables_dropout() -> None:
    torch.manual_seed(0)
    model = MLP(988, hidden=(256, 128), dropout=(0.5, 0.0))
    w = model.layers["fc1"].weight.detach().numpy()
    # Kaiming normal (fan_in, ReLU): std = sqrt(2 / fan_in). PyTorch's default would give ~1/sqrt(3 * fan_in).
    assert abs(w.std() - np.sqrt(2 / 988)) < 0.002
    assert np.all(model.layers["fc1"].bias.detach().numpy() == 0)
    x = torch.randn(8, 988)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_fedsgd_round_equals_manual_sgd_step() -> None:
    table = make_table()
    config = FLConfig(algorithm="fedsgd", rounds=1, client_fraction=0.2, dropout=(0.0, 0.0), normalization="none", seed=3)
    hook = Collect()
    result = simulate(config, table, hooks=[hook])
    g0 = hook.globals[0]
    # Recompute each client's gradient by hand on the same mini-batch is not possible without its
    # rows, so check the server step: theta_1 = theta_0 - lr * weighted mean of received gradients.
    total = sum(u.num_samples for u in hook.updates)
    for name, w0 in g0.items():
        mean_grad = sum(u.num_samples / total * u.arrays[name].astype(np.float64) for u in hook.updates)
        expected = w0 - 0.1 * mean_grad
        np.testing.assert_allclose(result.final_weights[name], expected, rtol=1e-5, atol=1e-6)


def test_fedsgd_update_is_the_minibatch_gradient() -> None:
    table = make_table()
    config = FLConfig(algorithm="fedsgd", rounds=1, dropout=(0.0, 0.0), normalization="none", batch_size=5, seed=1)
    split = split_clients(table, n_folds=config.n_folds, fold=0, seed=1)
    torch.manual_seed(0)
    fed = _Federation(config, table, split)
    client = split.clients[0]
    state = np.random.default_rng([1, 2])  # the federation's batch generator, replayed
    rows = state.choice(client.train_rows, size=5, replace=False)
    update, _ = fed.fedsgd_update(client, 0)
    # Manual gradient of the mean cross-entropy of the same rows, written out for a 3-layer MLP.
    x = torch.from_numpy(table.x[rows])
    y = fed.y[torch.from_numpy(rows)]
    w = {k: v.detach().clone().requires_grad_(True) for k, v in fed.params.items()}
    h1 = torch.relu(x @ w["fc1.weight"].T + w["fc1.bias"])
    h2 = torch.relu(h1 @ w["fc2.weight"].T + w["fc2.bias"])
    logits = h2 @ w["fc3.weight"].T + w["fc3.bias"]
    loss = -torch.log_softmax(logits, dim=1)[torch.arange(5), y].mean()
    loss.backward()
    for name, tensor in w.items():
        np.testing.assert_allclose(update.arrays[name], tensor.grad.numpy(), rtol=1e-5, atol=1e-7)
    assert update.kind == "gradient" and update.num_samples == 5 and update.local_steps == 1


def test_pseudo_gradient_matches_hand_computation() -> None:
    g = {"fc1.weight": np.array([[1.0, 2.0]], np.float32)}
    l = {"fc1.weight": np.array([[0.5, 3.0]], np.float32)}
    out = pseudo_gradient(g, l, lr=0.01, local_steps=4)
    np.testing.assert_allclose(out["fc1.weight"], [[0.5 / 0.04, -1.0 / 0.04]], rtol=1e-6)


def test_fedavg_pseudo_gradient_with_sgd_is_mean_local_gradient_and_server_averages() -> None:
    table = make_table()
    config = FLConfig(algorithm="fedavg", optimizer="sgd", lr=0.05, rounds=2, client_fraction=0.3,
                      dropout=(0.0, 0.0), normalization="global", seed=0)
    hook = Collect()
    result = simulate(config, table, hooks=[hook])
    last = [u for u in hook.updates if u.server_round == 1]
    for u in last:
        assert u.kind == "pseudo_gradient"
        n_batches = int(np.ceil((u.num_samples) / config.batch_size))
        assert u.local_steps == n_batches
        for name in u.arrays:
            recomputed = (u.global_weights[name] - u.local_weights[name]) / (0.05 * u.local_steps)
            np.testing.assert_allclose(u.arrays[name], recomputed, rtol=1e-4, atol=1e-5)
    # Server: weighted mean of local weights.
    total = sum(u.num_samples for u in last)
    for name in result.final_weights:
        expected = sum(u.num_samples / total * u.local_weights[name].astype(np.float64) for u in last)
        np.testing.assert_allclose(result.final_weights[name], expected, rtol=1e-4, atol=1e-5)


def test_same_seed_same_run_other_seed_other_run() -> None:
    table = make_table()
    runs = []
    for seed in (5, 5, 6):
        hook = Collect()
        simulate(FLConfig(algorithm="fedsgd", rounds=3, seed=seed), table, hooks=[hook])
        runs.append(hook)
    a, b, c = runs
    assert [(u.server_round, u.client_id) for u in a.updates] == [(u.server_round, u.client_id) for u in b.updates]
    for ua, ub in zip(a.updates, b.updates):
        for name in ua.arrays:
            np.testing.assert_array_equal(ua.arrays[name], ub.arrays[name])
    assert any(
        not np.array_equal(ua.arrays["fc1.weight"], uc.arrays["fc1.weight"]) for ua, uc in zip(a.updates, c.updates)
    )


def test_simulation_learns_the_emotion_signal() -> None:
    table = make_table(n_speakers=10, per_speaker=40)
    result = simulate(FLConfig(algorithm="fedsgd", rounds=40, client_fraction=0.5, seed=0), table)
    assert result.best.test_uar > 0.6  # chance is 0.25; column 0 separates the emotions
    assert result.best_round == int(np.nanargmax([m.val_uar for m in result.history]))


def test_transforms_run_before_hooks_and_aggregation() -> None:
    table = make_table()
    seen = Collect()

    def zero_first_layer(update: ClientUpdate, rng: np.random.Generator) -> ClientUpdate:
        arrays = dict(update.arrays)
        arrays["fc1.weight"] = np.zeros_like(arrays["fc1.weight"])
        return update.with_arrays(arrays)

    result = simulate(FLConfig(rounds=2, seed=0), table, defenses=DefensePieces(transforms=(zero_first_layer,)), hooks=[seen])
    assert all(not u.arrays["fc1.weight"].any() for u in seen.updates)
    np.testing.assert_array_equal(result.final_weights["fc1.weight"], seen.globals[0]["fc1.weight"])


def test_hooks_get_ground_truth_only_in_run_info() -> None:
    hook = Collect()
    simulate(FLConfig(rounds=1, seed=0), make_table(), hooks=[hook])
    assert {c.attributes["gender"] for c in hook.info.clients} == {"F", "M"}
    assert hook.result["rounds"] == 1


@pytest.mark.parametrize("bad", [{"algorithm": "fedprox"}, {"client_fraction": 0.0}, {"rounds": 0},
                                 {"dropout": (0.2,)}, {"fold": 7}, {"lr": -1.0}])
def test_config_rejects_bad_values(bad) -> None:
    with pytest.raises(InvalidParameterError) as err:
        FLConfig(**bad)
    key = next(iter(bad))
    assert repr(key) in str(err.value) or key in str(err.value)


def test_config_round_trips_through_dict() -> None:
    cfg = FLConfig(algorithm="fedavg", rounds=7, dropout=(0.4, 0.0), seed=9)
    assert FLConfig.from_dict({k: v for k, v in cfg.to_dict().items()}) == FLConfig(
        algorithm="fedavg", rounds=7, dropout=(0.4, 0.0), seed=9, lr=0.0005
    )

"""Every model trains under every defense; DP-SGD clips each sample's gradient of the CNN and the LSTM."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch

from fedaudit.config import FLConfig
from fedaudit.defenses import DefenseContext, DPSGDConfig, DPSGDTrainer, build_defenses, defenses_from_options
from fedaudit.defenses.paillier import InsecureKeyWarning
from fedaudit.fl.simulate import simulate
from fedaudit.models import MODELS, build_model
from tests.conftest import make_table
from tests.models.frames import frame_table

TINY = {"mlp": (8,), "dnn": (8,), "cnn": (4, 4), "lstm": (4,)}
OPTIONS: dict[str, dict[str, Any]] = {
    "prune": dict(prune_percent=50.0),
    "udp": dict(clip=1.0, noise_multiplier=0.5),
    "ldp": dict(clip=1.0, ldp_epsilon=10.0),
    "dp-sgd": dict(noise_multiplier=0.5, max_grad_norm=1.0),
    "sefl": dict(key_bits=512, insecure_key=True, encrypted_rounds=1, prune_percent=50.0),
}


@pytest.mark.parametrize("defense", sorted(OPTIONS))
@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_model_runs_under_every_defense(model: str, defense: str) -> None:
    frames = MODELS[model].frame_level
    table = frame_table(n_speakers=6, per_speaker=8) if frames else make_table(n_speakers=6, per_speaker=8)
    hidden = TINY[model]
    config = FLConfig(algorithm="fedavg", rounds=2, client_fraction=0.5, batch_size=8, model=model, hidden=hidden,
                      dropout=(0.0,) * len(hidden), n_folds=3, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        pieces = build_defenses(defenses_from_options([defense], OPTIONS[defense]),
                                DefenseContext.for_table(config, table))
        result = simulate(config, table, defenses=pieces)

    assert len(result.history) == 2
    assert np.isfinite(result.history[-1].train_loss)
    assert all(np.all(np.isfinite(w)) for w in result.final_weights.values())


def _per_sample_clipped_mean(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bound: float) -> dict:
    """The DP-SGD gradient without noise, computed one sample at a time."""
    total: dict[str, torch.Tensor] = {}
    for i in range(len(x)):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        grads = {".".join(n.split(".")[-2:]): p.grad.detach().clone() for n, p in model.named_parameters()}
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads.values()))
        scale = min(1.0, bound / float(norm))
        for k, g in grads.items():
            total[k] = total.get(k, 0) + g * scale
    return {k: (v / len(x)).numpy() for k, v in total.items()}


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
@pytest.mark.parametrize("name", ["cnn", "lstm"])
def test_dpsgd_clips_each_sample_of_the_sequence_models(name: str, mode: str) -> None:
    table = frame_table(n_speakers=2, per_speaker=6, n_frames=10, n_coefs=5)
    x = torch.from_numpy(table.x[:6])
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    torch.manual_seed(0)
    hidden = (6, 5) if name == "lstm" else (6, 6, 5)
    model = build_model(name, 50, frame_shape=(10, 5), hidden=hidden, dropout=(0.0,) * len(hidden))
    bound = 0.05  # small enough that every sample is clipped

    trainer = DPSGDTrainer(model, DPSGDConfig(noise_multiplier=0.0, max_grad_norm=bound, grad_sample_mode=mode))
    got = trainer.gradient(model, x, y)
    want = _per_sample_clipped_mean(model, x, y, bound)

    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-7, err_msg=k)
    assert float(np.sqrt(sum((g ** 2).sum() for g in got.values()))) <= bound + 1e-6

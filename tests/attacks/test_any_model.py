"""Every gender-inference attack on updates of Conv1d and LSTM client models, not only the MLP.

The models are small torch modules built here (tests/attacks/frame_models.py), named as
fedaudit's CNN and LSTM name their layers, and recorded by a plain PyTorch loop with
fedaudit.record.RecordingSession.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedaudit.attacks import (
    AttackerKnowledge,
    CNNFusionAttack,
    InversionAttack,
    ShapeMismatchError,
    StatsAttack,
    load_attack,
)
from fedaudit.attacks.update_statistics import layer_kind, update_statistics
from fedaudit.audit.attack import fit_attack, layer_leakage
from fedaudit.exceptions import InvalidParameterError
from fedaudit.record import UpdateStore
from tests.attacks.frame_models import N_COEFS, make_frames, record_runs
from tests.conftest import make_table


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The CI machine is shared: small models run faster on one thread than on two contending ones.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, one_thread) -> dict[str, dict[str, list[Path]]]:
    root = tmp_path_factory.mktemp("frame_models")
    return {model: record_runs(root, model) for model in ("cnn", "lstm")}


def _shapes(store: UpdateStore) -> dict[str, tuple[int, ...]]:
    return {p: store.shape(p) for p in store.parameter_names}


# -- update statistics ------------------------------------------------------------------------------
def test_statistics_of_a_conv_layer_are_those_of_its_patch_matrix_and_ignore_channel_order() -> None:
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, 8, 6, 3)), rng.normal(size=(3, 8))
    stats = update_statistics({"weight": w, "bias": b})
    assert layer_kind({"weight": (8, 6, 3), "bias": (8,)}) == "conv"
    assert stats.shape == (3, 3 * 6 * 3 + 4)
    perm = rng.permutation(8)
    np.testing.assert_allclose(update_statistics({"weight": w[:, perm], "bias": b[:, perm]}), stats, rtol=1e-10, atol=1e-12)
    # the first 18 values are the bias-weighted patch mixture db^T dW / |db|^2, (in, k) flattened
    np.testing.assert_allclose(stats[:, :18], np.einsum("no,noik->nik", b, w).reshape(3, 18)
                               / (b * b).sum(1, keepdims=True), rtol=1e-10)


def _lstm_arrays(rng: np.random.Generator, hidden: int = 5, coefs: int = 4) -> dict[str, np.ndarray]:
    bias = rng.normal(size=(3, 4 * hidden))
    return {"weight_ih_l0": rng.normal(size=(3, 4 * hidden, coefs)), "weight_hh_l0": rng.normal(size=(3, 4 * hidden, hidden)),
            "bias_ih_l0": bias, "bias_hh_l0": bias.copy()}


def test_statistics_of_an_lstm_layer_split_its_gates_and_ignore_hidden_unit_order() -> None:
    rng = np.random.default_rng(1)
    arrays = _lstm_arrays(rng)
    assert layer_kind({k: v.shape[1:] for k, v in arrays.items()}) == "recurrent"
    stats = update_statistics(arrays)
    # v (C), then 4 gates of weight_ih (3C + 4 each), then 4 gates of weight_hh (3H + 4 each)
    assert stats.shape == (3, 4 + 4 * (3 * 4 + 4) + 4 * (3 * 5 + 4))
    perm = rng.permutation(5)
    rows = np.concatenate([g * 5 + perm for g in range(4)])  # one permutation of the hidden units, every gate alike
    permuted = {k: v[:, rows] for k, v in arrays.items()}
    np.testing.assert_allclose(update_statistics(permuted), stats, rtol=1e-10, atol=1e-12)
    # the gates are told apart: swapping two gates changes the statistics
    swap = np.concatenate([np.arange(5, 10), np.arange(5), np.arange(10, 20)])
    assert not np.allclose(update_statistics({k: v[:, swap] for k, v in arrays.items()}), stats)


def test_a_layer_of_several_cells_concatenates_them() -> None:
    rng = np.random.default_rng(2)
    first, second = _lstm_arrays(rng), _lstm_arrays(rng, coefs=5)
    both = {**first, **{k.replace("_l0", "_l1"): v for k, v in second.items()}}
    np.testing.assert_allclose(update_statistics(both),
                               np.concatenate([update_statistics(first), update_statistics(second)], axis=1))


# -- stats attack and layer-wise leakage ----------------------------------------------------------------------
@pytest.mark.parametrize(("model", "layers"), [("cnn", ["conv1", "conv2", "fc1"]), ("lstm", ["lstm1", "fc1"])])
def test_stats_attack_reads_every_layer_of_any_model(runs, model: str, layers: list[str]) -> None:
    attack, _ = fit_attack("stats", shadows=runs[model]["shadows"], seed=0)
    with UpdateStore.open(runs[model]["target"][0]) as target:
        assert attack.layers_ == layers == target.layers
        assert attack.required_parameters() == target.parameter_names  # the LSTM's four tensors included
        sizes = {layer: sum(int(np.prod(s)) for p, s in _shapes(target).items() if p.startswith(f"{layer}."))
                 for layer in layers}
        assert attack.fusion_weights_ == pytest.approx({k: v / sum(sizes.values()) for k, v in sizes.items()})
        rows = layer_leakage(attack, target, seed=0)
    assert list(rows) == [*layers, "fused"]
    first = rows[layers[0]]
    # measured (seed 0): conv1 0.858, lstm1 1.000 on 12 target clients; chance 0.5
    assert first.chance == pytest.approx(0.5) and first.asr > 0.75 and first.ci_low <= first.asr <= first.ci_high


def test_stats_attack_on_an_lstm_survives_save_and_load(runs, tmp_path: Path) -> None:
    attack = StatsAttack(seed=0).fit(AttackerKnowledge(shadows=[UpdateStore.open(p) for p in runs["lstm"]["shadows"]]))
    with UpdateStore.open(runs["lstm"]["target"][0]) as target:
        updates = {p: target.param(p, np.arange(10)) for p in attack.required_parameters()}
    loaded = load_attack(attack.save(tmp_path / "stats_lstm"))
    np.testing.assert_array_equal(loaded.predict_proba(updates), attack.predict_proba(updates))
    assert loaded.restricted(["lstm1"]).required_parameters() == [
        "lstm1.weight_ih_l0", "lstm1.weight_hh_l0", "lstm1.bias_ih_l0", "lstm1.bias_hh_l0"]


# -- inversion ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("model", "layer", "kind", "width"),
                         [("cnn", "conv1", "conv", N_COEFS * 3), ("lstm", "lstm1", "recurrent", N_COEFS)])
def test_inversion_reads_the_input_layer_of_any_model(runs, model: str, layer: str, kind: str, width: int) -> None:
    public = make_frames(16, 16, seed=5)
    attack, _ = fit_attack("inversion", public=public, target=runs[model]["target"][0],
                           options={"draws_per_speaker": 20})
    assert (attack.layer_, attack.kind_, attack.n_features_) == (layer, kind, width)
    assert attack.fit_info_["mixture_of"] == {"conv": "patches", "recurrent": "frames"}[kind]
    with UpdateStore.open(runs[model]["target"][0]) as target:
        result = attack.score(target, seed=0)
    # measured (seed 0): 0.892 (conv1 patch mixtures), 1.000 (lstm1 frame mixtures); chance 0.5
    assert result.asr > 0.75


def test_inversion_of_a_conv_layer_needs_public_frames(runs) -> None:
    with UpdateStore.open(runs["cnn"]["target"][0]) as target:
        shapes = _shapes(target)  # a recording that does not name its feature set: the frames are checked
    with pytest.raises(InvalidParameterError, match=r"public features \(synthetic\) have no frames; extract the"):
        InversionAttack().fit(AttackerKnowledge(public=make_table(n_features=12), target_shapes=shapes))
    with pytest.raises(InvalidParameterError, match="trained on synthetic-frames features but the public features are synthetic"):
        fit_attack("inversion", public=make_table(n_features=12), target=runs["cnn"]["target"][0])
    narrow = make_frames(8, 8, seed=6, n_coefs=N_COEFS + 1)
    with pytest.raises(ShapeMismatchError, match=f"reads frames of {N_COEFS} values, but the public frames have 7"):
        fit_attack("inversion", public=narrow, target=runs["lstm"]["target"][0])


def test_inversion_fitted_on_one_model_refuses_another(runs) -> None:
    attack, _ = fit_attack("inversion", public=make_frames(8, 8, seed=5), target=runs["lstm"]["target"][0],
                           options={"draws_per_speaker": 5})
    with UpdateStore.open(runs["cnn"]["target"][0]) as other:
        with pytest.raises(ShapeMismatchError, match="has no parameter lstm1.weight_ih_l0, which the attack model reads"):
            attack.check_store(other)
    # without the target's shapes the attack takes a linear fc1, as before other models were read
    assert InversionAttack(seed=0).fit(AttackerKnowledge(public=make_table())).layer_ == "fc1"


# -- CNN fusion -----------------------------------------------------------------------------------------
def test_cnn_fusion_images_conv_and_lstm_weights(runs, tmp_path: Path) -> None:
    for model, images in (("cnn", {"conv1": [(8, N_COEFS * 3)], "conv2": [(8, 24)]}),
                          ("lstm", {"lstm1": [(32, N_COEFS), (32, 8)]})):
        stores = [UpdateStore.open(p) for p in runs[model]["shadows"]]
        layers = list(images)
        attack = CNNFusionAttack(layers=layers, epochs=1, seed=0).fit(AttackerKnowledge(shadows=stores))
        for layer, shapes in images.items():
            assert attack.branches_[layer].image_shapes == shapes
        with UpdateStore.open(runs[model]["target"][0]) as target:
            updates = {p: target.param(p, np.arange(6)) for p in attack.required_parameters()}
        proba = attack.predict_proba(updates)
        assert proba.shape == (6, 2) and np.allclose(proba.sum(1), 1)
        loaded = load_attack(attack.save(tmp_path / f"cnn_{model}"))
        np.testing.assert_array_equal(loaded.predict_proba(updates), proba)
        assert set(loaded.norm_stats_[layers[0]]) >= {f"{p.split('.', 1)[1]}_mean" for p in attack.parameters_
                                                      if p.startswith(f"{layers[0]}.")}

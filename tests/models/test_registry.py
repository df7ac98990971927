"""The model registry's contract, for every model: shapes, parameter names, padding, seeds, initialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedaudit.config import DEFAULT_ARCHITECTURES, FLConfig
from fedaudit.exceptions import InvalidParameterError
from fedaudit.models import MODELS, build_model, layer_names, parameter_shapes

T, C, N_CLASSES = 12, 5, 4
#: Small architectures of each model, and the input width it gets.
SMALL = {
    "mlp": dict(hidden=(16, 8), dropout=(0.0, 0.0)),
    "dnn": dict(hidden=(16, 8), dropout=(0.0, 0.0)),
    "cnn": dict(hidden=(6, 7, 8), dropout=(0.0, 0.0, 0.0)),
    "lstm": dict(hidden=(6, 8), dropout=(0.0, 0.0)),
}


def _build(name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    frames = MODELS[name].frame_level
    kwargs = {**SMALL[name], **overrides}
    return build_model(name, T * C if frames else 20, n_classes=N_CLASSES, frame_shape=(T, C) if frames else None,
                       **kwargs)


def _padded_batch(lengths: list[int], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(lengths), T, C)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randn(n, C, generator=g)
    return x


def _input(name: str, batch: int = 3) -> torch.Tensor:
    if MODELS[name].frame_level:
        return _padded_batch([T, T // 2, 3][:batch]).reshape(batch, -1)
    return torch.randn(batch, 20, generator=torch.Generator().manual_seed(1))


def test_every_model_has_a_default_architecture() -> None:
    assert set(MODELS) == set(DEFAULT_ARCHITECTURES) == {"mlp", "dnn", "cnn", "lstm"}
    for name, info in MODELS.items():
        model = build_model(name, 300 * 13 if info.frame_level else 988,
                            frame_shape=(300, 13) if info.frame_level else None)
        hidden, dropout = DEFAULT_ARCHITECTURES[name]
        assert len(hidden) == len(dropout)
        n_params = sum(p.numel() for p in model.parameters())
        assert n_params < 600_000, f"{name} default has {n_params} parameters: too large for the 2-core demo"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_shape_and_parameter_naming(name: str) -> None:
    model = _build(name)
    shapes = parameter_shapes(model)
    layers = layer_names(model)

    assert model(_input(name)).shape == (3, N_CLASSES)
    assert all(key.count(".") == 1 for key in shapes), shapes
    assert len(shapes) == len(list(model.parameters()))
    for layer in layers:  # one weight tensor (ndim >= 2) and bias (ndim 1) per layer
        own = {k: v for k, v in shapes.items() if k.split(".")[0] == layer}
        assert any(len(s) >= 2 for s in own.values()) and any(len(s) == 1 for s in own.values()), own
    last = layers[-1]
    assert shapes[f"{last}.weight"][0] == N_CLASSES and last.startswith("fc")
    first = {
        "mlp": ("fc1.weight", (16, 20)),
        "dnn": ("fc1.weight", (16, T * C)),
        "cnn": ("conv1.weight", (6, C, 5)),
        "lstm": ("lstm1.weight_ih_l0", (4 * 6, C)),
    }[name]
    assert layers[0] == first[0].split(".")[0]
    assert shapes[first[0]] == first[1]


def test_names_and_shapes_of_the_sequence_models() -> None:
    assert list(parameter_shapes(_build("cnn"))) == [
        "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
    ]
    assert parameter_shapes(_build("cnn"))["conv2.weight"] == (7, 6, 5)
    assert parameter_shapes(_build("cnn"))["fc1.weight"] == (8, 2 * 7)  # mean and max of conv2's channels
    assert parameter_shapes(_build("lstm")) == {
        "lstm1.weight_ih_l0": (24, C), "lstm1.weight_hh_l0": (24, 6), "lstm1.bias_ih_l0": (24,),
        "lstm1.bias_hh_l0": (24,), "fc1.weight": (8, 6), "fc1.bias": (8,), "fc2.weight": (N_CLASSES, 8),
        "fc2.bias": (N_CLASSES,),
    }
    assert layer_names(_build("lstm", hidden=(6,), dropout=(0.0,))) == ["lstm1", "fc1"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_layers_are_listed_in_forward_order(name: str) -> None:
    model = _build(name)
    called: list[str] = []
    for key, module in model.layers.items():
        module.register_forward_hook(lambda *_, key=key: called.append(key))
    model(_input(name))
    assert called == layer_names(model)


@pytest.mark.parametrize("name", ["cnn", "lstm"])
def test_padding_changes_nothing_the_unpadded_prefix_gives(name: str) -> None:
    model = _build(name).eval()
    lengths = [T, 7, 3, 1]
    x = _padded_batch(lengths, seed=3)
    with torch.no_grad():
        padded = model(x.reshape(len(x), -1))
        for i, n in enumerate(lengths):
            alone = model(x[i : i + 1, :n].reshape(1, -1))
            torch.testing.assert_close(padded[i : i + 1], alone, rtol=1e-5, atol=1e-6)
        # and the padding really is what is ignored: changing a valid frame changes the output
        x2 = x.clone()
        x2[1, 6] += 1.0
        assert not torch.allclose(model(x2.reshape(len(x), -1))[1], padded[1])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_seed_fixes_the_initial_weights(name: str) -> None:
    a, b, c = _build(name, seed=5), _build(name, seed=5), _build(name, seed=6)
    for (_, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))
    assert torch.equal(a.eval()(_input(name)), b.eval()(_input(name)))


@pytest.mark.parametrize(("name", "layer", "fan_in"), [
    ("mlp", "fc1", 200), ("dnn", "fc1", 60 * 5), ("cnn", "conv1", 5 * 5), ("cnn", "fc1", 2 * 64), ("lstm", "fc1", 64),
])
def test_he_initialisation(name: str, layer: str, fan_in: int) -> None:
    wide = {"mlp": dict(hidden=(512,), dropout=(0.0,)), "dnn": dict(hidden=(512,), dropout=(0.0,)),
            "cnn": dict(hidden=(64, 64, 256), dropout=(0.0,) * 3), "lstm": dict(hidden=(64, 512), dropout=(0.0, 0.0))}
    torch.manual_seed(0)
    frames = MODELS[name].frame_level
    model = build_model(name, 200 if not frames else 60 * 5, frame_shape=(60, 5) if frames else None, **wide[name])
    w = dict(model.named_parameters())[f"layers.{layer}.weight"].detach().numpy()
    b = dict(model.named_parameters())[f"layers.{layer}.bias"].detach().numpy()
    assert w.std() == pytest.approx(np.sqrt(2.0 / fan_in), rel=0.05)
    assert np.all(b == 0)


def test_a_model_refuses_the_other_kind_of_input() -> None:
    with pytest.raises(InvalidParameterError, match=r"'lstm' model takes frame sequences.*'mfcc-frames'"):
        build_model("lstm", 988)
    with pytest.raises(InvalidParameterError, match=r"'mlp' model takes one feature vector per utterance.*cnn, dnn"):
        build_model("mlp", T * C, frame_shape=(T, C))
    with pytest.raises(InvalidParameterError, match="Unknown model 'gru'; choose one of"):
        build_model("gru", 10)


@pytest.mark.parametrize(("name", "kwargs", "needle"), [
    ("cnn", dict(hidden=(8,), dropout=(0.0,)), "at least 2 widths"),
    ("lstm", dict(hidden=(8, 4), dropout=(0.0,)), "one dropout rate per entry"),
    ("cnn", dict(hidden=(8, 8), dropout=(0.0, 0.0), frame_shape=(T, C + 1)), "gives 72 values"),
])
def test_bad_architectures_are_one_sentence(name: str, kwargs: dict, needle: str) -> None:
    kwargs = {"frame_shape": (T, C), **kwargs}
    with pytest.raises(InvalidParameterError, match=needle):
        build_model(name, T * C, **kwargs)


def test_flconfig_resolves_the_model_default_architecture() -> None:
    assert FLConfig().hidden == (256, 128) and FLConfig().dropout == (0.2, 0.0)
    assert FLConfig(model="lstm").hidden == DEFAULT_ARCHITECTURES["lstm"][0]
    cfg = FLConfig(model="cnn", hidden=(16, 16, 16, 32))
    assert cfg.dropout == (0.1, 0.0, 0.0, 0.0)
    back = FLConfig.from_dict(cfg.to_dict())
    assert (back.model, back.hidden, back.dropout) == ("cnn", cfg.hidden, cfg.dropout)
    with pytest.raises(InvalidParameterError, match="has no default architecture"):
        FLConfig(model="transformer")

"""SER client models, in one registry: the simulator trains them, attacks that need a forward pass rebuild them.

This package sits below both `fl/` and `attacks/` (it imports only the ground floor), so an
attack can rebuild the architecture a recording names without importing the simulator.

=========  ================  ===========================================================
key        input             ``hidden`` means
=========  ================  ===========================================================
``mlp``    utterance vector  widths of the dense hidden layers fc1..fcK
``dnn``    frames, flattened widths of the dense hidden layers fc1..fcK
``cnn``    frames            channels of conv1..convK, then the dense head's width (fc1)
``lstm``   frames            the LSTM state size (lstm1), then the dense head's widths
=========  ================  ===========================================================

``dropout`` has one rate per entry of ``hidden``, applied after that layer.
Defaults are :data:`fedaudit.config.DEFAULT_ARCHITECTURES`. Frame inputs are
``(B, T * C)`` rows flattened frame-major with all-zero padding frames.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from torch import nn

from fedaudit.config import default_architecture
from fedaudit.exceptions import InvalidParameterError
from fedaudit.models.mlp import DNN, MLP
from fedaudit.models.sequence import CNN, LSTM, frame_mask, masked_mean

__all__ = [
    "CNN",
    "DNN",
    "LSTM",
    "MLP",
    "MODELS",
    "ModelInfo",
    "build_model",
    "check_model_input",
    "frame_mask",
    "layer_names",
    "masked_mean",
    "parameter_shapes",
]


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """A registered model.

    Parameters
    ----------
    builder
        Called as ``builder(n_features, hidden=, dropout=, n_classes=)``, plus
        ``frame_shape=`` for a frame-level model.
    frame_level
        Whether the model takes frame sequences (``mfcc-frames``) rather than one
        vector per utterance.
    description
        One line for ``--help`` texts and the docs.
    """

    builder: Callable[..., nn.Module]
    frame_level: bool
    description: str


#: Model registry: key -> :class:`ModelInfo`.
MODELS: Mapping[str, ModelInfo] = MappingProxyType({
    "mlp": ModelInfo(builder=MLP, frame_level=False,
                     description="dense layers on one feature vector per utterance (Feng et al. 2022)"),
    "dnn": ModelInfo(builder=DNN, frame_level=True, description="dense layers on the flattened frames"),
    "cnn": ModelInfo(builder=CNN, frame_level=True,
                     description="1-D convolutions over time, mean and max over valid frames, dense head"),
    "lstm": ModelInfo(builder=LSTM, frame_level=True,
                      description="one LSTM layer, mean of its states over valid frames, dense head"),
})


def check_model_input(name: str, *, frame_level: bool, feature_set: str | None = None) -> ModelInfo:
    """The registered model ``name``, if it takes the kind of input given (frames or one vector per utterance).

    Raises
    ------
    InvalidParameterError
        If the model is unknown, or takes the other kind of input.
    """
    try:
        info = MODELS[name]
    except KeyError:
        raise InvalidParameterError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.") from None
    what = f"the {feature_set!r} features are" if feature_set else "the features are"
    if info.frame_level and not frame_level:
        vector_models = sorted(k for k, v in MODELS.items() if not v.frame_level)
        raise InvalidParameterError(
            f"The {name!r} model takes frame sequences, but {what} one vector per utterance; "
            f"use the feature set 'mfcc-frames', or a model for utterance-level features ({', '.join(vector_models)})."
        )
    if not info.frame_level and frame_level:
        frame_models = sorted(k for k, v in MODELS.items() if v.frame_level)
        raise InvalidParameterError(
            f"The {name!r} model takes one feature vector per utterance, but {what} frame sequences; "
            f"use a frame-level model ({', '.join(frame_models)}) or an utterance-level feature set (e.g. 'mfcc')."
        )
    return info


def build_model(
    name: str,
    n_features: int,
    *,
    hidden: Sequence[int] | None = None,
    dropout: Sequence[float] | None = None,
    n_classes: int = 4,
    frame_shape: Sequence[int] | None = None,
) -> nn.Module:
    """Build a registered model.

    Parameters
    ----------
    name
        A key of :data:`MODELS`.
    n_features
        Input width: features per utterance, or ``T * C`` for frames.
    hidden, dropout
        Architecture (see the module docstring); ``None`` takes the model's
        default (:func:`fedaudit.config.default_architecture`).
    n_classes
        Output width.
    frame_shape
        ``(T, C)`` of frame inputs; required by frame-level models, refused by
        utterance-level ones.

    Raises
    ------
    InvalidParameterError
        If the model is unknown, or its input level does not match ``frame_shape``.

    Examples
    --------
    >>> model = build_model("lstm", 300 * 13, frame_shape=(300, 13))
    >>> layer_names(model)
    ['lstm1', 'fc1', 'fc2']
    """
    info = check_model_input(name, frame_level=frame_shape is not None)
    default_hidden, default_dropout = default_architecture(name, hidden)
    kwargs = dict(hidden=tuple(default_hidden), dropout=tuple(default_dropout if dropout is None else dropout),
                  n_classes=int(n_classes))
    if info.frame_level:
        kwargs["frame_shape"] = tuple(int(d) for d in frame_shape)  # type: ignore[union-attr]
    return info.builder(int(n_features), **kwargs)


def _short_name(param_name: str) -> str:
    # "layers.fc1.weight" -> "fc1.weight"
    parts = param_name.split(".")
    return ".".join(parts[-2:])


def parameter_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """``{"fc1.weight": (256, 988), ...}`` in model order."""
    return {_short_name(n): tuple(p.shape) for n, p in model.named_parameters()}


def layer_names(model: nn.Module) -> list[str]:
    """Layer names in model order, input layer first (``["fc1", "fc2", "fc3"]``)."""
    return list(dict.fromkeys(n.split(".")[0] for n in parameter_shapes(model)))
